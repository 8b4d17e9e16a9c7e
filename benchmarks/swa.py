"""Sliding-window attention benchmark: correctness on the GPU, then timings, one markdown table.

Run on a GPU machine from the repo root:

    PYTHONPATH=. python3 -m benchmarks.swa            # checks + timings (~3 min on an H200)
    PYTHONPATH=. python3 -m benchmarks.swa --sweep    # also sweeps Pallas block configs

The shape is the DRT lower-decoder layer at the paper's training length: B=4, T=16640, H=12,
d=64, W=512, bf16. Every number is a median over repeated timed loops after warm-up.
"""

import argparse
import dataclasses
import datetime
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax.training.runtime import warn_if_gpu_unused
from kernels.swa import pallas_triton, sliding_window_decode
from kernels.swa._common import SwaBlockConfig
from kernels.swa.reference import sliding_window_attention_reference

BENCH = dict(B=4, T=16640, H=12, Hkv=12, d=64, W=512)
CHECKS = [  # (B, T, H, Hkv, d, W, dtype): small GPU correctness shapes, T off the block grid.
    (2, 1000, 4, 2, 64, 128, jnp.bfloat16),
    (2, 1000, 4, 2, 64, 128, jnp.float32),
    (1, 777, 4, 4, 48, -1, jnp.bfloat16),
    (1, 2048, 6, 3, 64, 3, jnp.float32),
]
FWD_SWEEP = [  # (block_q, block_k, num_warps, num_stages)
    (64, 64, 4, 3),
    (64, 64, 4, 4),
    (64, 32, 4, 3),
    (64, 128, 4, 3),
    (32, 64, 4, 3),
    (64, 64, 8, 3),
    (128, 64, 4, 3),
]
BWD_SWEEP = [  # (block_q_dq, block_k_dq, block_q_dkv, block_k_dkv, num_warps, num_stages)
    (64, 32, 32, 64, 4, 3),
    (64, 32, 32, 64, 4, 4),
    (64, 64, 64, 64, 4, 3),
    (32, 32, 32, 32, 4, 3),
    (64, 32, 32, 64, 2, 3),
    (128, 32, 32, 128, 4, 4),
    (64, 16, 16, 64, 4, 3),
]
WIDE_FWD_SWEEP = [
    (64, 64, 4, 3),
    (128, 64, 4, 3),
    (128, 128, 8, 3),
    (128, 64, 8, 3),
    (128, 32, 4, 3),
]
WIDE_BWD_SWEEP = [
    (64, 32, 32, 64, 4, 3),
    (128, 32, 32, 128, 4, 3),
    (64, 64, 64, 64, 4, 3),
    (128, 64, 64, 128, 8, 3),
]
ATOL_REL = {jnp.bfloat16: 1e-2, jnp.float32: 1e-5}


def slopes(H):
    return 2.0 ** (-8.0 * (jnp.arange(H, dtype=jnp.float32) + 1) / H)


def inputs(key, B, T, H, Hkv, d, dtype):
    kq, kk, kv, kc = jax.random.split(key, 4)
    q = jax.random.normal(kq, (B, T, H, d), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (B, T, Hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (B, T, Hkv, d), jnp.float32).astype(dtype)
    ct = jax.random.normal(kc, (B, T, H, d), jnp.float32).astype(dtype)
    return q, k, v, ct


INTERPRET = False  # --smoke: run the kernels in the Pallas interpreter on CPU.
SCALING_T = (4096, 16384, 65536)
DECODE_LAYERS = 12


def pallas_fn(W, H, config=None):
    sl = slopes(H)
    return lambda q, k, v: pallas_triton.sliding_window_attention_pallas(
        q, k, v, window=W, alibi_slopes=sl, config=config, interpret=INTERPRET
    )


def reference_fn(W, H):
    sl = slopes(H)
    return lambda q, k, v: sliding_window_attention_reference(q, k, v, window=W, alibi_slopes=sl)


def cudnn_fn(W):
    local = None if W < 0 else (W, 0)
    return lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, is_causal=True, local_window_size=local, implementation="cudnn"
    )


def decode_einsum(q, k, v, key_pos, q_pos, *, window, alibi_slopes):
    """Decode written with two einsums (MHA only): the baseline for the fused-reduction form."""
    s = jnp.einsum("bhd,bnhd->bhn", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    diff = q_pos[:, None] - key_pos
    s = s - alibi_slopes[None, :, None] * diff[:, None, :].astype(jnp.float32)
    visible = ((key_pos >= 0) & (diff >= 0) & (diff <= window))[:, None, :]
    p = jax.nn.softmax(jnp.where(visible, s, -jnp.inf), axis=-1)
    return jnp.einsum("bhn,bnhd->bhd", p.astype(v.dtype), v).astype(q.dtype)


def fwd_bwd(fn):
    def run(q, k, v, ct):
        o, vjp = jax.vjp(fn, q, k, v)
        return (o,) + vjp(ct)

    return run


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)), "non-finite values"
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check(fn, W, H, q, k, v, ct):
    """Relative errors (out, dq, dk, dv) of fn against the f32 reference on upcast inputs."""
    f32 = [x.astype(jnp.float32) for x in (q, k, v, ct)]
    with jax.default_matmul_precision("highest"):  # XLA would use TF32 for the f32 oracle.
        ref = jax.jit(fwd_bwd(reference_fn(W, H)))(*f32)
    got = jax.jit(fwd_bwd(fn))(q, k, v, ct)
    return [rel(g, r) for g, r in zip(got, ref)]


def time_ms(fn, *args, target_s=0.25, reps=7):
    """Median milliseconds per call: back-to-back async dispatch, block at the end of each loop."""
    jax.block_until_ready(fn(*args))  # Compile.
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = time.perf_counter() - t
    iters = max(3, min(200, int(target_s / reps / max(one, 1e-6))))
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(samples)


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true", help="also sweep Pallas block configs")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, interpreter (CPU check)")
    args = ap.parse_args()
    if not args.smoke:
        warn_if_gpu_unused()
    if args.smoke:
        global INTERPRET, SCALING_T, CHECKS, FWD_SWEEP, BWD_SWEEP
        INTERPRET, SCALING_T = True, (128, 256)
        CHECKS = [(1, 100, 4, 2, 16, 8, jnp.float32)]
        FWD_SWEEP, BWD_SWEEP = FWD_SWEEP[:2], BWD_SWEEP[:2]
        global WIDE_FWD_SWEEP, WIDE_BWD_SWEEP
        WIDE_FWD_SWEEP, WIDE_BWD_SWEEP = WIDE_FWD_SWEEP[:1], WIDE_BWD_SWEEP[:1]
        BENCH.update(B=1, T=384, H=2, Hkv=2, d=16, W=64)
    t_start = time.time()
    dev = jax.devices()[0]
    log = lambda *a: print(f"[{time.time() - t_start:6.1f}s]", *a, flush=True)  # noqa: E731
    log("device:", dev.device_kind, "jax", jax.__version__)
    failures = []

    # 1. Correctness on the GPU, before any timing.
    key = jax.random.key(0)
    for i, (B, T, H, Hkv, d, W, dt) in enumerate(CHECKS):
        q, k, v, ct = inputs(jax.random.fold_in(key, i), B, T, H, Hkv, d, dt)
        try:
            errs = check(pallas_fn(W, H), W, H, q, k, v, ct)
        except (RuntimeError, ValueError, AssertionError) as e:
            errs = [float("nan")] * 4
            log(f"check {i} raised {type(e).__name__}: {str(e)[:300]}")
        ok = max(errs) <= ATOL_REL[dt]
        failures += [] if ok else [f"check {i}"]
        log(
            f"check B={B} T={T} H={H} Hkv={Hkv} d={d} W={W} {jnp.dtype(dt).name}: "
            f"rel err out/dq/dk/dv = {', '.join(f'{e:.2e}' for e in errs)} {'OK' if ok else 'FAIL'}"
        )
    B, T, H, Hkv, d, W = (BENCH[n] for n in ("B", "T", "H", "Hkv", "d", "W"))
    q, k, v, ct = inputs(jax.random.fold_in(key, 99), B, T, H, Hkv, d, jnp.bfloat16)
    bench_errs = check(pallas_fn(W, H), W, H, q, k, v, ct)
    ok = max(bench_errs) <= ATOL_REL[jnp.bfloat16]
    failures += [] if ok else ["bench shape"]
    log("bench-shape rel err out/dq/dk/dv:", ", ".join(f"{e:.2e}" for e in bench_errs))

    rows = []  # (variant, T, W, fwd ms, fwd+bwd ms, ns/token, note)

    def add(name, fn, T_, W_, q_, k_, v_, ct_, note="", fwd_only=False):
        fwd = bwd = None
        try:
            fwd = time_ms(jax.jit(fn), q_, k_, v_)
            if not fwd_only:
                bwd = time_ms(jax.jit(fwd_bwd(fn)), q_, k_, v_, ct_)
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as e:
            note = f"{note} failed: {type(e).__name__}: {str(e)[:80]}"
        ns = None if bwd is None else bwd * 1e6 / (q_.shape[0] * T_)
        rows.append((name, T_, W_, fwd, bwd, ns, note))
        log(name, f"T={T_} W={W_}", "fwd", fmt(fwd), "fwd+bwd", fmt(bwd), note)
        return fwd, bwd

    def sweep(W_, base, fwd_list, bwd_list):
        """Fastest forward config, then fastest backward config given it, at the bench shape."""
        fwd_times, bwd_times = {}, {}
        for bq, bk, nw, ns in fwd_list:
            cfg = dataclasses.replace(base, block_q=bq, block_k=bk, num_warps=nw, num_stages=ns)
            try:
                fwd_times[cfg] = time_ms(jax.jit(pallas_fn(W_, H, cfg)), q, k, v)
            except (RuntimeError, ValueError) as e:
                log("sweep fwd", (bq, bk, nw, ns), "failed", str(e)[:200])
                continue
            log(f"sweep W={W_} fwd", (bq, bk, nw, ns), fmt(fwd_times[cfg]))
        base = min(fwd_times, key=fwd_times.get)
        for bq1, bk1, bq2, bk2, nw, ns in bwd_list:
            cfg = dataclasses.replace(
                base,
                block_q_dq=bq1,
                block_k_dq=bk1,
                block_q_dkv=bq2,
                block_k_dkv=bk2,
                num_warps_bwd=nw,
                num_stages_bwd=ns,
            )
            try:
                bwd_times[cfg] = time_ms(jax.jit(fwd_bwd(pallas_fn(W_, H, cfg))), q, k, v, ct)
            except (RuntimeError, ValueError) as e:
                log("sweep bwd", (bq1, bk1, bq2, bk2, nw, ns), "failed", str(e)[:200])
                continue
            log(f"sweep W={W_} fwd+bwd", (bq1, bk1, bq2, bk2, nw, ns), fmt(bwd_times[cfg]))
        best_ = min(bwd_times, key=bwd_times.get)
        log(f"best config W={W_}:", best_)
        errs = check(pallas_fn(W_, H, best_), W_, H, q, k, v, ct)
        log("best-config rel err:", ", ".join(f"{e:.2e}" for e in errs))
        if max(errs) > ATOL_REL[jnp.bfloat16]:
            failures.append(f"best sweep config W={W_}")
        return best_

    # 2. Optional block-config sweep at the bench shape (default: the heuristic configs).
    best = SwaBlockConfig.default(T, d, W)
    best_wide = SwaBlockConfig.default(T, d, -1)
    if args.sweep:
        best = sweep(W, best, FWD_SWEEP, BWD_SWEEP)
        best_wide = sweep(-1, best_wide, WIDE_FWD_SWEEP, WIDE_BWD_SWEEP)

    # 3. Timings at the bench shape, side by side.
    add("pallas (ALiBi)", pallas_fn(W, H, best), T, W, q, k, v, ct)
    add("cuDNN local window (no ALiBi)", cudnn_fn(W), T, W, q, k, v, ct)
    add("XLA blocked reference (ALiBi)", reference_fn(W, H), T, W, q, k, v, ct)
    add("pallas full causal (ALiBi)", pallas_fn(-1, H, best_wide), T, -1, q, k, v, ct)
    add("cuDNN full causal (no ALiBi)", cudnn_fn(-1), T, -1, q, k, v, ct)

    # 4. Per-token cost must stay flat in T.
    for T_ in SCALING_T:
        args_ = inputs(jax.random.fold_in(key, T_), B, T_, H, Hkv, d, jnp.bfloat16)
        add("pallas (ALiBi), scaling", pallas_fn(W, H, best), T_, W, *args_)

    # 5. Decode: one query row against a ring buffer of W + 1 slots.
    N = W + 1
    for Bd in (1, 16):
        kd = jax.random.split(jax.random.fold_in(key, 1000 + Bd), 4)
        qd = jax.random.normal(kd[0], (Bd, H, d), jnp.float32).astype(jnp.bfloat16)
        kc = jax.random.normal(kd[1], (Bd, N, Hkv, d), jnp.float32).astype(jnp.bfloat16)
        vc = jax.random.normal(kd[2], (Bd, N, Hkv, d), jnp.float32).astype(jnp.bfloat16)
        pos = jax.vmap(lambda kk: jax.random.permutation(kk, N))(jax.random.split(kd[3], Bd))
        pos = (pos + 10_000).astype(jnp.int32)
        qp = jnp.full((Bd,), 10_000 + N - 1, jnp.int32)
        sl = slopes(H)
        dec = jax.jit(
            lambda a, b, c, e, f: sliding_window_decode(a, b, c, e, f, window=W, alibi_slopes=sl)
        )
        ms = time_ms(dec, qd, kc, vc, pos, qp)
        rows.append((f"decode (XLA), batch {Bd}, N={N}", 1, W, ms, None, None, "one jit call"))
        log("decode", Bd, fmt(ms, 4))
        # As in a model's decode step: one call per layer inside one jit, each layer's output
        # feeding the next layer's query (L caches of the same shape, stacked).
        L = DECODE_LAYERS
        kc_L, vc_L = (jnp.broadcast_to(x, (L,) + x.shape) + 0 for x in (kc, vc))

        def layers(decode, a, kc_L, vc_L, e, f):
            def one(x, kv):
                return decode(x, *kv, e, f, window=W, alibi_slopes=sl), None

            return jax.lax.scan(one, a, (kc_L, vc_L))[0]

        for name, decode in (("XLA", sliding_window_decode), ("einsum baseline", decode_einsum)):
            fn = jax.jit(functools.partial(layers, decode))
            ms_l = time_ms(fn, qd, kc_L, vc_L, pos, qp) / L
            note = f"per layer, {L}-layer scan"
            rows.append((f"decode ({name}), batch {Bd}, N={N}", 1, W, ms_l, None, None, note))
            log(f"decode {name} per layer in scan", Bd, fmt(ms_l, 4))

    cmd = "PYTHONPATH=. python3 -m benchmarks." + " ".join(["swa"] + sys.argv[1:])
    print()
    print(
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; GPU: {dev.device_kind}; "
        f"jax {jax.__version__}; command: `{cmd}`"
    )
    print(f"Shape: B={B}, H={H}, Hkv={Hkv}, d={d}, bf16; Pallas config: {best}")
    print(
        f"Rel. error vs f32 reference at T={T}, W={W} (out, dq, dk, dv): "
        + ", ".join(f"{e:.2e}" for e in bench_errs)
        + f"; checks failed: {failures or 'none'}"
    )
    print()
    print("| variant | T | W | fwd (ms) | fwd+bwd (ms) | fwd+bwd (ns/token) | note |")
    print("|---|---|---|---|---|---|---|")
    for name, T_, W_, fwd, bwd, ns, note in rows:
        print(f"| {name} | {T_} | {W_} | {fmt(fwd, 4)} | {fmt(bwd)} | {fmt(ns, 2)} | {note} |")
    log("done")
    if failures:
        sys.exit(f"correctness failures: {failures}")


if __name__ == "__main__":
    main()
