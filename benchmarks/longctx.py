"""Long-context inference on one GPU: passkey prefill to 16M tokens and decoding at 1M context.

Run: `PYTHONPATH=. python3 -m benchmarks.longctx` (randomly initialised DRT-128M,
configs/drt_128m_pg19.yaml). Each measurement runs in its own process, so the peak device memory
(``memory_stats()["peak_bytes_in_use"]``) is its own. Prints a markdown table for
docs/performance.md ("## Long-context inference") as rows finish; with $OUT set, also writes
`--out_name` (longctx.json) there. `--smoke` runs the same plumbing on CPU with configs/tiny.yaml.

Prefill: one sample of T raw tokens (random ids; a passkey sample costs the same), segmented
prefill, logits only at the scored position. A warm-up prefill of three segments with the same
memory capacity compiles every shape first; the table shows "warm-up + wall" seconds (end to end
is their sum) and tokens/s of the warm run.
Decode: a chunk memory of the given context (synthetic content: the work per step does not
depend on it), then timed greedy-style steps incl. chunk completions (retrieval refreshes).
Does not import grain (absent on the GPU machine).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax.training.runtime import warn_if_gpu_unused


def _model(config: str, overrides: list[str]):
    from flax import nnx

    from gca_jax.config import load_config
    from gca_jax.modeling import build_model

    cfg = load_config(config, overrides).model
    return build_model(cfg, rngs=nnx.Rngs(0))


def _peak_gb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 1e9


def run_prefill(job: dict) -> dict:
    """One passkey-style prefill of ``job['length']`` raw tokens; wall time and peak memory."""
    from gca_jax.inference import Engine

    model = _model(job["config"], job["overrides"])
    s = model.cfg.retrieval.chunk_len
    # Whole segments only (one compiled shape fewer); 1M -> 1,048,320 tokens at S = 63.
    t = job["length"] // (s * job["segment_chunks"]) * (s * job["segment_chunks"])
    engine = Engine(model, segment_chunks=job["segment_chunks"], offload=job["offload"])
    # Ordinary ids below pad_id (257 for bytes, 50257 for GPT-2).
    tokens = np.random.default_rng(0).integers(0, model.cfg.pad_id, (1, t)).astype(np.int32)
    # Warm-up: three segments with the full memory capacity compile every shape of the run.
    seg = s * job["segment_chunks"]
    start = time.perf_counter()
    engine.prefill(tokens[:, : 3 * seg], logits_at=[seg - 1], capacity=t // s)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    out = engine.prefill(tokens, logits_at=[t - s])
    wall = time.perf_counter() - start
    assert np.isfinite(out.logits).all()
    return {
        "tokens": t,
        "warmup_s": warmup,
        "wall_s": wall,
        "tokens_per_s": t / wall,
        "peak_gb": _peak_gb(),
    }


def run_check(job: dict) -> dict:
    """Segmented prefill (configured kernels) vs the unsegmented XLA forward, 128 chunks."""
    from flax import nnx

    from gca_jax.inference import Engine

    model = _model(job["config"], job["overrides"])
    cfg = model.cfg
    t = 128 * cfg.retrieval.chunk_len
    tokens = np.random.default_rng(1).integers(0, cfg.pad_id, (1, t)).astype(np.int32)
    pos = np.arange(t - 200, t)
    out = Engine(model, segment_chunks=32).prefill(tokens, logits_at=pos)
    ref_model = _model(job["config"], job["overrides"] + ["model.kernel_backend=xla"])
    nnx.update(ref_model, nnx.state(model))
    ref = np.asarray(jax.jit(lambda x: ref_model.logits(x))(jnp.asarray(tokens)))[0, pos]
    return {
        "max_abs_diff": float(np.abs(out.logits[0] - ref).max()),
        "max_abs_logit": float(np.abs(ref).max()),
        "argmax_agree": float(np.mean(out.logits[0].argmax(-1) == ref.argmax(-1))),
    }


def run_decode(job: dict) -> dict:
    """Decode steps at a context of ``job['length']`` tokens for batch ``job['batch']``.

    ``job['loop']``: "token" = one ``feed`` per token, synced each time (a host step per token);
    "fused" = greedy ``feed_sampled`` spans to each chunk's end, one jitted call per span.
    """
    from gca_jax.inference import Decoder, Engine

    model = _model(job["config"], job["overrides"])
    cfg = model.cfg
    engine = Engine(model, segment_chunks=job["segment_chunks"])
    chunk_len = cfg.retrieval.chunk_len
    chunks = job["length"] // chunk_len
    b, steps = job["batch"], job["steps"]
    carry = engine.empty_carry(b, chunks + steps // chunk_len + 3)
    carry.store.num_chunks = chunks  # synthetic memory: zero rows, same work per step
    carry.num_positions = chunks * cfg.retrieval.slots_per_chunk
    decoder = Decoder(engine, carry)
    ids, key = jnp.zeros((b,), jnp.int32), jax.random.key(0)

    def run(n):  # n tokens, then waits for the device
        if job.get("loop", "token") == "token":
            for _ in range(n):
                decoder.feed(ids).block_until_ready()
            return
        nonlocal key
        while n:
            span = decoder.span(n)
            out, key = decoder.feed_sampled(ids, key, span, top_k=1, temperature=1.0, top_p=1.0)
            n -= span
        out.block_until_ready()

    run(chunk_len)  # warm-up: compiles the step (or span) and the chunk completion,
    if rem := steps % chunk_len:  # and the shorter last span, ending back at a chunk start
        run(rem)
        run(chunk_len - rem)
    start = time.perf_counter()
    run(steps)
    wall = time.perf_counter() - start
    return {
        "tokens": b * steps,
        "wall_s": wall,
        "tokens_per_s": b * steps / wall,
        "peak_gb": _peak_gb(),
    }


def _child(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.longctx", "--job", json.dumps(job)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(lines[-1])


def _row(job: dict, r: dict) -> str:
    if job["kind"] == "check":
        return f"<!-- check vs XLA forward: {json.dumps(r)} -->"
    what = "prefill"
    if job["kind"] == "decode":
        what = f"decode B={job['batch']} ({job.get('loop', 'token')} loop)"
    mem = "host (offload)" if job.get("offload") else "device"
    ctx = f"{job['length'] / (1 << 20):g}M" if job["length"] >= 1 << 20 else str(job["length"])
    if "error" in r:
        return f"| {what} | {ctx} | {mem} | failed: {r['error']} | | | |"
    warm = f"{r['warmup_s']:.0f} + " if "warmup_s" in r else ""
    return (
        f"| {what} | {ctx} | {mem} | {r['tokens']:,} | {warm}{r['wall_s']:.1f} | "
        f"{r['tokens_per_s']:,.0f} | "
        f"{r['peak_gb']:.2f} |"
    )


def main() -> None:
    """Runs the measurements in child processes and prints the table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--lengths", default="1M,4M,16M")
    p.add_argument("--modes", default="device,offload")
    p.add_argument("--decode_batches", default="1,16")
    p.add_argument("--decode_context", default="1M")
    p.add_argument("--decode_steps", type=int, default=126)
    p.add_argument("--decode_loops", default="token,fused", help="token and/or fused")
    p.add_argument("--segment_chunks", type=int, default=256)
    p.add_argument("--timeout", type=float, default=420, help="seconds per measurement")
    p.add_argument("--deadline", type=float, default=3600, help="seconds for all measurements")
    p.add_argument("--smoke", action="store_true", help="CPU plumbing check, tiny config")
    p.add_argument("--check", action="store_true", help="first compare with the XLA forward")
    p.add_argument("--out_name", default="longctx.json", help="results file under $OUT")
    args = p.parse_args()
    warn_if_gpu_unused()
    if args.job:
        job = json.loads(args.job)
        runner = {"prefill": run_prefill, "decode": run_decode, "check": run_check}[job["kind"]]
        result = dict(runner(job), device=jax.devices()[0].device_kind)
        print(json.dumps(result), flush=True)
        return
    from gca_jax.inference.evaluation import parse_length

    config, overrides = "configs/drt_128m_pg19.yaml", ["model.kernel_backend=auto"]
    if args.smoke:
        config, overrides = "configs/tiny.yaml", ["model.kernel_backend=xla"]
    base = {"config": config, "overrides": overrides, "segment_chunks": args.segment_chunks}
    jobs = [
        dict(base, kind="prefill", length=parse_length(n), offload=m == "offload")
        for m in args.modes.split(",")
        for n in args.lengths.split(",")
        if n
    ]
    decode = [
        dict(
            base,
            kind="decode",
            length=parse_length(args.decode_context),
            batch=int(b),
            steps=args.decode_steps,
            loop=loop,
        )
        for b in args.decode_batches.split(",")
        if b
        for loop in args.decode_loops.split(",")
    ]
    jobs = jobs[:1] + decode + jobs[1:]  # cheap decode rows before the longest prefills
    if args.check:
        jobs.insert(0, dict(base, kind="check", length=128 * 63))
    # The parent never touches the GPU: its client would hold most of the memory the children
    # measure. Each child reports the device it ran on.
    print(f"date {datetime.date.today()}, jax {jax.__version__}")
    print(f"command: PYTHONPATH=. python3 -m benchmarks.longctx {' '.join(sys.argv[1:])}\n")
    print("| run | context | chunk K/V | tokens timed | (warm-up +) wall s | tokens/s ", end="")
    print("| peak device GB |")
    print("|---|---|---|---|---|---|---|", flush=True)
    results, start = [], time.perf_counter()
    for job in jobs:
        left = args.deadline - (time.perf_counter() - start)
        r = _child(job, min(args.timeout, left)) if left > 10 else {"error": "deadline reached"}
        results.append({"job": job, **r})
        print(_row(job, r), flush=True)
    print(f"\ndevice: {sorted({r['device'] for r in results if 'device' in r})}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], args.out_name), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
