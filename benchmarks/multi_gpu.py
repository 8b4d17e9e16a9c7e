"""Sharded pre-training on the GPUs of one host: layouts, scaling, re-sharding on resume.

Run (on a host with N >= 2 GPUs): `PYTHONPATH=. python3 -m benchmarks.multi_gpu`.
Every run is the real launcher (`python -m train`) in its own process on DRT-128M
(configs/drt_128m_pg19.yaml) over a prepared corpus, with the same seed and per-device batch:

  single      1 GPU, mesh (1, 1, 1): the baseline for scaling efficiency
  data        N GPUs, mesh (N, 1, 1), checkpoint mid-run
  fsdp        N GPUs, mesh (1, N, 1)
  fsdp_tensor N GPUs, mesh (1, N/2, 2) (mesh (1, 1, 2) on 2 GPUs)
  resume      the data run's mid-run checkpoint restored on the fsdp mesh, trained to the end
  resume_1gpu the same checkpoint restored on 1 GPU (same global batch), if time is left

Tokens/s of a run is the median over its logged intervals after the first (which holds the
compile). Prints a markdown table for docs/performance.md and, with $OUT set, writes
multi_gpu.json there; logs and metrics.jsonl of every run stay under --work. `--smoke` runs the
same plumbing on fake CPU devices with configs/tiny.yaml.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(name, ndev, mesh, batch, steps, args) -> dict:
    """One `python -m train` run on ``ndev`` devices; returns its logged train rows."""
    out_dir = os.path.join(args.work, name)
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", PYTHONUNBUFFERED="1")
    # A run on a mesh seen before (the resume) takes its program from the cache.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.work, "jax_cache"))
    if args.smoke:
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={ndev}")
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(ndev))
    cmd = [
        sys.executable, "-m", "train", "--config", args.config, "--output_dir", out_dir,
        f"data.corpus_dir={args.corpus}", "data.eval_corpus_dir=null",
        f"data.tokenizer={args.tokenizer}", f"data.seq_len={args.seq_len}",
        f"data.batch_size={batch}", f"train.steps={steps}", f"train.save_every={args.save_at}",
        f"train.warmup_steps={args.warmup}", f"train.log_every={args.log_every}",
        "train.eval_every=0", "train.keep_checkpoints=3",
        f"mesh.data={mesh[0]}", f"mesh.fsdp={mesh[1]}", f"mesh.tensor={mesh[2]}",
        *args.overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    with open(os.path.join(args.work, f"{name}.log"), "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    rows = []
    metrics = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        rows = [json.loads(x) for x in open(metrics) if '"train"' in x]
    rate = [r["tokens_per_s"] for r in rows[1:]]
    result = {
        "name": name,
        "devices": ndev,
        "mesh": list(mesh),
        "global_batch": batch,
        "steps": [r["step"] for r in rows],
        "loss": [r["loss"] for r in rows],
        "tokens_per_s": statistics.median(rate) if rate else float("nan"),
        "mfu": statistics.median([r["mfu"] for r in rows[1:]])
        if rate and "mfu" in rows[-1]
        else float("nan"),
        "wall_s": round(wall, 1),
        "rc": proc.returncode,
    }
    print(
        f"{name}: rc {proc.returncode}, {wall:.0f} s, {result['tokens_per_s']:.0f} tokens/s, "
        f"loss {result['loss'][:1]} -> {result['loss'][-1:]}",
        flush=True,
    )
    return result


def _max_loss_gap(a: dict, b: dict) -> float:
    """Largest |loss difference| over the logged steps two runs share."""
    la, lb = dict(zip(a["steps"], a["loss"])), dict(zip(b["steps"], b["loss"]))
    shared = sorted(set(la) & set(lb))
    return max((abs(la[s] - lb[s]) for s in shared), default=float("nan"))


def _resume_from(src: str, step: int, dst: str) -> None:
    """``dst`` starts as a copy of ``src``'s checkpoint at ``step`` (its mid-run save)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(
        os.path.join(src, "checkpoints", str(step)), os.path.join(dst, "checkpoints", str(step))
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="fake CPU devices, tiny model")
    p.add_argument("--devices", type=int, default=None, help="N (default: all GPUs; smoke 2)")
    p.add_argument("--config", default="configs/drt_128m_pg19.yaml")
    p.add_argument("--corpus", default="data/pydocs/train")
    p.add_argument("--tokenizer", default="bytes")
    p.add_argument("--seq_len", type=int, default=16380)
    p.add_argument("--batch_per_device", type=int, default=2)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--deadline", type=float, default=560, help="seconds for all runs")
    p.add_argument("--work", default="/tmp/multi_gpu_runs")
    p.add_argument("--quick", action="store_true", help="only the data and single runs")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = p.parse_args()
    if args.smoke:
        args.config, args.seq_len, args.steps, args.warmup = "configs/tiny.yaml", 240, 8, 2
        args.log_every, args.devices = 2, args.devices or 2
    if args.devices is None:  # not jax.device_count(): this process must leave the GPUs free
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        args.devices = listing.stdout.count("GPU ")
    n = args.devices
    if n < 2 or n % 2:
        raise SystemExit(f"needs an even number >= 2 of devices, got {n}")
    args.save_at = args.steps // 2
    os.makedirs(args.work, exist_ok=True)
    start = time.perf_counter()
    b = args.batch_per_device
    runs = []

    def launch(*a, **kw):  # keeps multi_gpu.json current: a run cut short keeps what finished
        runs.append(_launch(*a, args, **kw))
        if os.environ.get("OUT"):
            with open(os.path.join(os.environ["OUT"], "multi_gpu.json"), "w") as f:
                json.dump({"args": vars(args), "runs": runs}, f, indent=1)

    data_dir = os.path.join(args.work, "data")
    launch("data", n, (n, 1, 1), n * b, args.steps)
    launch("single", 1, (1, 1, 1), b, args.steps // 2 + args.log_every)
    if runs[0]["rc"]:
        raise SystemExit(f"the data-parallel run failed: see {data_dir}.log")
    if args.quick:
        return _report(runs, args)
    launch("fsdp", n, (1, n, 1), n * b, args.steps)
    _resume_from(data_dir, args.save_at, os.path.join(args.work, "resume"))
    launch("resume", n, (1, n, 1), n * b, args.steps)
    launch("fsdp_tensor", n, (1, n // 2, 2), n * b, args.steps // 2)
    if time.perf_counter() - start < args.deadline - 150:
        _resume_from(data_dir, args.save_at, os.path.join(args.work, "resume_1gpu"))
        launch("resume_1gpu", 1, (1, 1, 1), n * b, args.steps)

    _report(runs, args)


def _report(runs: list[dict], args) -> None:
    """Prints the markdown table."""
    n, b = args.devices, args.batch_per_device
    by_name = {r["name"]: r for r in runs}
    single = by_name["single"]["tokens_per_s"]
    print(f"\n{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {n} devices; "
          f"{args.config} T={args.seq_len}, {b} sequences per device\n")  # fmt: skip
    print("| run | devices | mesh (data, fsdp, tensor) | global batch | tokens/s | per device | "
          "scaling eff. | MFU | max abs loss gap vs data | steps | rc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        per_dev = r["tokens_per_s"] / r["devices"]
        same_load = r["global_batch"] == b * r["devices"]  # resume_1gpu carries N x the batch
        r["scaling_efficiency"] = per_dev / single if same_load else float("nan")
        same_batch = r["global_batch"] == by_name["data"]["global_batch"]
        gap = _max_loss_gap(r, by_name["data"]) if same_batch else float("nan")
        r["max_loss_gap_vs_data"] = gap
        eff = f"{r['scaling_efficiency']:.1%}" if same_load else "-"
        gap_s = f"{gap:.4f}" if gap == gap else "-"
        last = r["steps"][-1] if r["steps"] else "-"
        print(
            f"| {r['name']} | {r['devices']} | {tuple(r['mesh'])} | {r['global_batch']} | "
            f"{r['tokens_per_s']:,.0f} | {per_dev:,.0f} | {eff} | {r['mfu']:.1%} | {gap_s} | "
            f"{last} | {r['rc']} |"
        )


if __name__ == "__main__":
    main()
