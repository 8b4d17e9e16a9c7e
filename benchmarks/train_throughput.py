"""Training throughput and memory: DRT-128M vs the SWA baseline vs full attention, one device.

    python -m benchmarks.train_throughput [--cases drt:16k:4:full,swa:16k:4:full ...]

Each case is ``model:length:batch:remat``: model in {drt, drt_x2, swa, swa2, full, landmark, rpt,
brt} (configs drt_128m_pg19.yaml, drt_128m_x2_pg19.yaml, swa_128m.yaml, swa_128m_plus2.yaml,
swa_128m.yaml with window -1, landmark_128m.yaml, rpt_128m.yaml with uniform idf,
brt_128m.yaml), length in {4k, 16k, 64k} (4032, 16380,
65520 raw tokens, multiples of S = 63) or a number. Random tokens, the real jitted train step
(AdamW, clipping, donation), kernel_backend=auto. All cases are lowered, then compiled in parallel
threads; then each runs 2 warm-up steps and the median of ``--steps`` timed steps. Peak memory
is XLA's compiled estimate (arguments + outputs + temporaries - aliased), since the allocator's
peak counter cannot be reset between cases. Prints one markdown table (plus ratios) with date,
GPU, jax version and command.
"""

import argparse
import concurrent.futures
import datetime
import logging
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.profile_summary import format_summary, summarize
from gca_jax import sharding as shard_lib
from gca_jax.config import MeshConfig, load_config
from gca_jax.modeling import flops_per_token
from gca_jax.training.metrics import peak_flops
from gca_jax.training.optimizer import lr_schedule, make_optimizer
from gca_jax.training.runtime import warn_if_gpu_unused
from gca_jax.training.state import abstract_state, init_state
from gca_jax.training.step import make_train_step

MODELS = {
    "drt": ("configs/drt_128m_pg19.yaml", []),
    "drt_x2": ("configs/drt_128m_x2_pg19.yaml", []),
    "swa": ("configs/swa_128m.yaml", []),
    "swa2": ("configs/swa_128m_plus2.yaml", []),  # BaseLM + 2 layers
    "full": ("configs/swa_128m.yaml", ["model.window=-1"]),
    "landmark": ("configs/landmark_128m.yaml", []),
    # uniform idf: random tokens need no corpus statistics, and the cost is the same
    "rpt": ("configs/rpt_128m.yaml", ["model.rpt.idf_path=null"]),
    "brt": ("configs/brt_128m.yaml", []),  # 16k = 16380 tokens: the last block is padded
    "tiny": ("configs/tiny.yaml", []),  # CPU smoke test of this script
}
LENGTHS = {"4k": 4032, "16k": 16380, "64k": 65520}
DEFAULT_CASES = (  # in order of importance: later ones are dropped first by --budget_s
    "drt:16k:4:full,swa:16k:4:full,full:16k:4:full,drt:64k:1:full,swa:64k:1:full,full:64k:1:full,"
    "drt:4k:16:full,swa:4k:16:full,full:4k:16:full,drt:16k:4:dots,swa:16k:4:dots,drt:16k:8:dots"
)


class _BackendLog(logging.Handler):
    """Collects the kernels' 'auto -> backend' choices (logged once per op and backend)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record):
        self.seen.append(record.getMessage().split(" (")[0])


def _length(name: str) -> int:
    return LENGTHS[name] if name in LENGTHS else int(name)


# A case that fails (out of memory, a shape a kernel rejects, a backend without the op) is reported
# in its own row, so one bad case does not cost the run the others.
ERRORS = (jax.errors.JaxRuntimeError, ValueError, NotImplementedError)


class Case:
    """One benchmark case: its config, lowered step and (after ``compile``) executable."""

    def __init__(self, spec: str, backend: str = "auto"):
        model, length, batch, remat = spec.split(":")
        path, extra = MODELS[model]
        self.seq, self.batch = _length(length), int(batch)
        self.name = spec.replace(":", "_")
        self.row = {"model": model, "T": self.seq, "B": self.batch, "remat": remat}
        over = [f"data.seq_len={self.seq}", f"data.batch_size={self.batch}"]
        over += [f"model.remat={remat}", f"model.kernel_backend={backend}"]
        self.cfg = load_config(path, extra + over)
        self.mesh = shard_lib.make_mesh(MeshConfig(data=-1), jax.devices()[:1])
        self.tx = make_optimizer(self.cfg.train)
        self.compiled = None

    def lower(self):
        """Traces the train step against abstract inputs (sequential: tracing is Python)."""
        cfg = self.cfg
        mdef, abstract, shardings = abstract_state(cfg.model, cfg.train.seed, self.tx, self.mesh)
        batch_sh = shard_lib.batch_sharding(self.mesh)
        step = jax.jit(
            make_train_step(mdef, self.tx, lr_schedule(cfg.train), cfg.train),
            in_shardings=(shardings, {"tokens": batch_sh}),
            out_shardings=(shardings, None),
            donate_argnames=("state",),
        )
        tokens = jax.ShapeDtypeStruct((self.batch, self.seq), jnp.int32, sharding=batch_sh)
        with jax.set_mesh(self.mesh):
            self.lowered = step.lower(abstract, {"tokens": tokens})

    def compile(self):
        """XLA compilation (releases the GIL: cases compile in parallel threads)."""
        t0 = time.perf_counter()
        self.compiled = self.lowered.compile()
        self.row["compile_s"] = time.perf_counter() - t0
        mem = self.compiled.memory_analysis()
        if mem is not None:
            peak = mem.argument_size_in_bytes + mem.output_size_in_bytes
            peak += mem.temp_size_in_bytes - mem.alias_size_in_bytes
            self.row["peak_gib"] = peak / 2**30

    def time(self, state, steps: int, profile_dir: str | None = None) -> None:
        """Warm-up and timed steps from ``state`` (donated); with profile_dir, then traces two
        more steps and prints where their device time goes."""
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, self.cfg.model.pad_id, (self.batch, self.seq), dtype=np.int32)
        with jax.set_mesh(self.mesh):
            batch = shard_lib.global_batch({"tokens": tokens}, self.mesh)
            for _ in range(2):
                state, metrics = self.compiled(state, batch)
            jax.block_until_ready(metrics["loss"])
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                state, metrics = self.compiled(state, batch)
                jax.block_until_ready(metrics["loss"])
                times.append(time.perf_counter() - t)
            if profile_dir:
                log_dir = os.path.join(profile_dir, self.name)
                with jax.profiler.trace(log_dir):
                    for _ in range(2):
                        state, metrics = self.compiled(state, batch)
                    jax.block_until_ready(metrics["loss"])
                print(format_summary(summarize(log_dir, steps=2), self.name), flush=True)
        median = statistics.median(times)
        self.row.update(step_ms=1e3 * median, tok_s=self.batch * self.seq / median)
        self.row["loss"] = float(metrics["loss"])
        peak_dev = peak_flops(jax.devices()[0])
        if peak_dev:
            self.row["mfu"] = (
                flops_per_token(self.cfg.model, self.seq) * self.row["tok_s"] / peak_dev
            )


def _error(e: Exception) -> str:
    return "failed: " + (str(e).splitlines()[0][:80] if str(e) else type(e).__name__)


def _fmt(row: dict) -> str:
    def get(key, fmt):
        return fmt.format(row[key]) if key in row else "-"

    status = row.get("error", "ok")
    return (
        f"| {row['model']} | {row['T']} | {row['B']} | {row['remat']} | {get('step_ms', '{:.1f}')} "
        f"| {get('tok_s', '{:,.0f}')} | {get('mfu', '{:.1%}')} | {get('peak_gib', '{:.1f}')} "
        f"| {get('compile_s', '{:.0f}')} | {status} |"
    )


def _ratios(rows: list[dict]) -> list[str]:
    """DRT against SWA and full attention at each length, between rows of the same remat policy
    (the first such row of each model: cases come in order of importance)."""
    ok = {}
    for r in rows:
        if "tok_s" in r:
            ok.setdefault((r["model"], r["T"], r["remat"]), r)
    lines = []
    for model, t, remat in ok:
        if model != "drt":
            continue
        drt = ok[("drt", t, remat)]
        parts = []
        if ("swa", t, remat) in ok:
            # Per-token step-time ratio (batches may differ between cases).
            ratio = ok[("swa", t, remat)]["tok_s"] / drt["tok_s"]
            parts.append(f"DRT step / SWA step (per token) = {ratio:.2f} (target <= 1.2)")
        if ("full", t, remat) in ok:
            ratio = drt["tok_s"] / ok[("full", t, remat)]["tok_s"]
            parts.append(f"DRT tokens/s / full attention = {ratio:.2f}x")
        if parts:
            lines.append(f"- T={t}, remat {remat}: " + "; ".join(parts))
    return lines


def main(argv=None) -> int:
    """Runs the cases within the time budget and prints the markdown report."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__)
    p.add_argument("--cases", default=DEFAULT_CASES, help="comma list of model:len:batch:remat")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case (median)")
    p.add_argument("--budget_s", type=float, default=270.0, help="start no case after this")
    p.add_argument("--backend", default="auto", help="model.kernel_backend for every case")
    p.add_argument("--compile_threads", type=int, default=8, help="parallel XLA compilations")
    p.add_argument("--profile_dir", help="also trace 2 steps per case here and print a breakdown")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warn_if_gpu_unused()
    backends = _BackendLog()
    kernel_log = logging.getLogger("kernels._backend")
    kernel_log.setLevel(logging.INFO)
    kernel_log.addHandler(backends)
    start = time.perf_counter()
    cases = []
    for spec in args.cases.split(","):
        case = Case(spec, args.backend)
        try:
            case.lower()
            cases.append(case)
        except ERRORS as e:
            case.row["error"] = _error(e)
            cases.append(case)
    ready = [c for c in cases if "error" not in c.row]

    def compile_one(case):
        try:
            case.compile()
        except ERRORS as e:
            case.row["error"] = _error(e)

    with concurrent.futures.ThreadPoolExecutor(args.compile_threads) as pool:
        list(pool.map(compile_one, ready))
    print(
        f"lowered + compiled {len(cases)} cases in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    initial = {}  # one initial state per model; each case times a copy (the step donates it)
    for case in cases:
        if "error" in case.row:
            continue
        if time.perf_counter() - start > args.budget_s:
            case.row["error"] = "not run (time budget)"
            continue
        try:
            key = case.row["model"]
            if key not in initial:
                initial[key] = init_state(case.cfg.model, case.cfg.train.seed, case.tx, case.mesh)[
                    1
                ]
            case.time(jax.tree.map(jnp.copy, initial[key]), args.steps, args.profile_dir)
        except ERRORS as e:
            case.row["error"] = _error(e)
        case.compiled = None  # free the executable
        print(_fmt(case.row), file=sys.stderr, flush=True)
    rows = [c.row for c in cases]
    dev = jax.devices()[0]
    print(
        f"\nDate: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; GPU: "
        f"{dev.device_kind}; jax {jax.__version__}; kernels: {', '.join(backends.seen) or '-'}"
    )
    print(f"Command: `python -m benchmarks.train_throughput {' '.join(argv or sys.argv[1:])}`\n")
    print(
        "| model | T | B/device | remat | step ms | tokens/s | MFU | peak GiB (XLA) | compile s "
        "| status |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_fmt(row))
    print()
    for line in _ratios(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
