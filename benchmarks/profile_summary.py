"""Where a jitted step spends its device time: a table of GPU kernels from a jax.profiler trace.

    with jax.profiler.trace(log_dir):
        ...  # run the steps
    print(format_summary(summarize(log_dir, steps=n)))

Kernels are grouped by name (summed over calls, divided by ``steps``) and into coarse
categories by name patterns (matmul, Pallas kernels by their name, collectives, copies, other
XLA fusions), so a step's time splits into what a change can act on.
"""

import collections
import glob
import os

import jax

# First matching pattern wins; names are lower-cased kernel names as the GPU trace shows them.
CATEGORIES = (
    ("gca kernels", ("gca_",)),
    ("swa kernels", ("swa_",)),
    ("matmul", ("gemm", "xmma", "cutlass", "cublas", "matmul", "sm90_", "sm80_", "nvjet")),
    ("collectives", ("nccl", "all-reduce", "all_reduce", "all-gather", "reduce-scatter")),
    ("copies", ("memcpy", "memset", "copy")),
    ("sort", ("sort",)),
)
_NON_KERNEL_LINES = ("XLA Modules", "XLA Ops", "Steps", "Source", "TraceMe", "Framework")


def category(kernel: str) -> str:
    low = kernel.lower()
    for cat, patterns in CATEGORIES:
        if any(p in low for p in patterns):
            return cat
    return "other fusions"


def _xplane(log_dir: str) -> str:
    paths = sorted(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {log_dir}")
    return paths[-1]


def summarize(log_dir: str, steps: int = 1, top: int = 25) -> dict:
    """summarize_profile of the trace that jax.profiler.trace(log_dir) wrote."""
    return summarize_profile(jax.profiler.ProfileData.from_file(_xplane(log_dir)), steps, top)


def summarize_profile(data, steps: int = 1, top: int = 25) -> dict:
    """Per-step device time by kernel name and by category from a jax.profiler.ProfileData.

    Returns {"total_ms", "by_category": [(name, ms)], "top": [(kernel, ms, calls)],
    "devices": n}; times are summed over the kernel lines of every GPU plane (one GPU in a
    single-device benchmark) and divided by ``steps``. Empty on a host without GPU planes.
    """
    time_ns = collections.Counter()
    calls = collections.Counter()
    devices = 0
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        devices += 1
        for line in plane.lines:
            if line.name.startswith(_NON_KERNEL_LINES):
                continue
            for event in line.events:
                time_ns[event.name] += event.duration_ns
                calls[event.name] += 1
    by_cat = collections.Counter()
    for name, ns in time_ns.items():
        by_cat[category(name)] += ns
    scale = 1e-6 / max(steps, 1)
    return {
        "devices": devices,
        "total_ms": sum(time_ns.values()) * scale,
        "by_category": [(c, ns * scale) for c, ns in by_cat.most_common()],
        "top": [(n, ns * scale, calls[n] / max(steps, 1)) for n, ns in time_ns.most_common(top)],
    }


def format_summary(summary: dict, title: str = "") -> str:
    """Markdown: categories, then the top kernels (ms per step, calls per step)."""
    total = summary["total_ms"] or 1.0
    lines = [f"**{title}** device kernel time {summary['total_ms']:.1f} ms per step", ""]
    lines += ["| category | ms/step | share |", "|---|---|---|"]
    lines += [f"| {c} | {ms:.1f} | {ms / total:.0%} |" for c, ms in summary["by_category"]]
    lines += ["", "| kernel | ms/step | calls/step | share |", "|---|---|---|---|"]
    for name, ms, n in summary["top"]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short}` | {ms:.2f} | {n:g} | {ms / total:.1%} |")
    return "\n".join(lines)
