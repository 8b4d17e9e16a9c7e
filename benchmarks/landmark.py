"""Landmark-attention kernel benchmark: correctness on the GPU, then fwd and fwd+bwd timings.

    PYTHONPATH=. python3 -m benchmarks.landmark            # ~2 minutes on an H200
    PYTHONPATH=. python3 -m benchmarks.landmark --smoke    # CPU plumbing check (interpreter)

Shape: one Landmark-128M layer at the paper's training length, B=4, T=16,384 (256 blocks of 64
with a landmark last), H=12, d=64, bf16. Beside it in the same run: cuDNN's full causal attention
(the same O(T^2) work without the landmark bookkeeping; issue target: landmark fwd+bwd within
1.3x of it) and this project's sliding-window kernel (W=512, ALiBi). Each number is the median of
7 timed loops after warm-up. Prints one markdown table with date, GPU and jax version.
"""

import argparse
import datetime
import sys

import jax
import jax.numpy as jnp

from benchmarks.swa import time_ms
from gca_jax.training.runtime import warn_if_gpu_unused
from kernels.landmark import landmark_attention
from kernels.swa import sliding_window_attention

BENCH = dict(B=4, T=16384, H=12, d=64, block=64)
CHECK = dict(B=1, T=1024, H=4, d=64, block=64)
BACKEND = "pallas"


def _inputs(key, b, t, h, d, dtype):
    ks = jax.random.split(key, 4)
    return [jax.random.normal(k, (b, t, h, d), jnp.float32).astype(dtype) for k in ks]


def _fwd_bwd(fn):
    """(q, k, v, ct) -> (out, dq, dk, dv) of fn."""

    def run(q, k, v, ct):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(ct))

    return run


def _rel(got, want) -> float:
    got, want = got.astype(jnp.float32), want.astype(jnp.float32)
    return float(jnp.linalg.norm(got - want) / jnp.maximum(jnp.linalg.norm(want), 1e-30))


def main(argv=None) -> int:
    """Checks the kernel against the reference, then prints the timing table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, interpreter (CPU check)")
    args = p.parse_args(argv)
    if not args.smoke:
        warn_if_gpu_unused()
    global BACKEND
    if args.smoke:
        BACKEND = "interpret"
        BENCH.update(B=1, T=128, H=2, d=16, block=16)
        CHECK.update(B=1, T=64, H=2, d=16, block=16)
    block = BENCH["block"]
    lm = lambda be, blk: lambda q, k, v: landmark_attention(q, k, v, block_len=blk, backend=be)  # noqa: E731

    # 1. Correctness: the kernel against the XLA reference in float32 inputs, gradients included.
    c = CHECK
    q, k, v, ct = _inputs(jax.random.key(0), c["B"], c["T"], c["H"], c["d"], jnp.float32)
    with jax.default_matmul_precision("highest"):
        want = jax.jit(_fwd_bwd(lm("xla", c["block"])))(q, k, v, ct)
    got = jax.jit(_fwd_bwd(lm(BACKEND, c["block"])))(q, k, v, ct)
    errs = [_rel(g, w) for g, w in zip(got, want, strict=True)]
    print("check rel err out/dq/dk/dv:", ", ".join(f"{e:.2e}" for e in errs), flush=True)
    if not all(e < 2e-2 for e in errs):
        print("FAIL: the kernel disagrees with the reference", file=sys.stderr)
        return 1

    # 2. Timings at the layer shape.
    b, t, h, d = BENCH["B"], BENCH["T"], BENCH["H"], BENCH["d"]
    q, k, v, ct = _inputs(jax.random.key(1), b, t, h, d, jnp.bfloat16)
    slopes = jnp.exp2(-8.0 * jnp.arange(1, h + 1, dtype=jnp.float32) / h)
    cases = {
        f"landmark ({BACKEND}, blocks of {block})": lm(BACKEND, block),
        f"sliding window W=512 + ALiBi ({BACKEND})": lambda q, k, v: sliding_window_attention(
            q, k, v, window=512, alibi_slopes=slopes, backend=BACKEND
        ),
    }
    if not args.smoke:
        cases["cuDNN full causal"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation="cudnn"
        )
    rows = {}
    for name, fn in cases.items():
        fwd = time_ms(jax.jit(fn), q, k, v)
        both = time_ms(jax.jit(_fwd_bwd(fn)), q, k, v, ct)
        rows[name] = (fwd, both)
        print(f"{name}: fwd {fwd:.3f} ms, fwd+bwd {both:.3f} ms", flush=True)

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{now}; {jax.devices()[0].device_kind}; jax {jax.__version__}; B={b} T={t} H={h} d={d}"
    )
    print("Command: `PYTHONPATH=. python3 -m benchmarks.landmark`\n")
    print("| kernel | fwd ms | fwd+bwd ms |\n|---|---|---|")
    for name, (fwd, both) in rows.items():
        print(f"| {name} | {fwd:.3f} | {both:.3f} |")
    ref = rows.get("cuDNN full causal")
    if ref is not None:
        lm_both = rows[next(iter(rows))][1]
        ratio = lm_both / ref[1]
        print(f"\nlandmark fwd+bwd / cuDNN full causal fwd+bwd = {ratio:.2f} (target <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
