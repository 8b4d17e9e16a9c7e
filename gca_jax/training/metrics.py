"""Metrics: one writer (metrics.jsonl + TensorBoard) on process 0, and the MFU's peak FLOP/s.

FLOPs per token come from the model's class (``gca_jax.modeling.flops_per_token``, the
convention in ``gca_jax/modeling/flops.py``); MFU = FLOPs/token * tokens/s / (devices * peak
FLOP/s of one device).
"""

import json
import logging
import os

import jax

logger = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def peak_flops(device: jax.Device) -> float | None:
    """Peak bf16 FLOP/s of one device, or None when unknown (CPU)."""
    kind = getattr(device, "device_kind", "")
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops
    return None


class MetricsWriter:
    """Appends scalars to ``<dir>/metrics.jsonl`` and TensorBoard; a no-op off process 0.

    On resume from step s, rows after s (written before the interruption, and a line cut short
    by a kill) are dropped from metrics.jsonl first, and TensorBoard is told to purge events
    after s, so every step appears once. Both sinks are flushed with each row, so a killed run
    loses no row it reported; an event file a kill left empty is removed at the next start.

    Args:
      log_dir: the run's output directory.
      enabled: whether this process writes (process 0).
      resume_step: the step training resumes from (0 for a fresh start).
    """

    def __init__(self, log_dir: str, *, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self._log_dir = log_dir
        self._resume_step = resume_step
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, "metrics.jsonl")
        _truncate_rows(path, resume_step)
        _remove_empty_event_files(os.path.join(log_dir, "tensorboard"))
        self._jsonl = open(path, "a")  # noqa: SIM115

    def _tensorboard(self):
        """The TensorBoard writer, created at the first row (no event file without events)."""
        if self._tb is None:
            from tensorboardX import SummaryWriter

            purge = self._resume_step + 1 if self._resume_step else None
            self._tb = SummaryWriter(os.path.join(self._log_dir, "tensorboard"), purge_step=purge)
        return self._tb

    def write(self, step: int, scalars: dict[str, float], *, prefix: str = "train") -> None:
        """Records one row of scalars (keys become ``prefix/key`` in TensorBoard)."""
        if not self.enabled:
            return
        row = {"step": step, "split": prefix, **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        tb = self._tensorboard()
        for k, v in scalars.items():
            tb.add_scalar(f"{prefix}/{k}", float(v), step)
        tb.flush()

    def close(self) -> None:
        """Flushes and closes both sinks (the TensorBoard writer's thread included)."""
        jsonl, tb, self._jsonl, self._tb = self._jsonl, self._tb, None, None
        try:
            if tb is not None:
                tb.close()
        finally:
            if jsonl is not None:
                jsonl.close()


def _remove_empty_event_files(tb_dir: str) -> None:
    """Removes event files a kill left empty (between a writer's creation and its first flush)."""
    for name in os.listdir(tb_dir) if os.path.isdir(tb_dir) else ():
        path = os.path.join(tb_dir, name)
        if name.startswith("events.out.tfevents.") and os.path.getsize(path) == 0:
            os.remove(path)


def _truncate_rows(path: str, last_step: int) -> None:
    """Keeps the rows of ``path`` up to ``last_step`` (none when 0); drops a cut-off last line.

    Rewrites through a temporary file and a rename, so a kill leaves the old or the new file.
    """
    if not os.path.exists(path):
        return
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # A line cut short by a kill.
                continue
            if last_step and int(row.get("step", 0)) <= last_step:
                keep.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if not dropped:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)
    logger.info("metrics.jsonl: %d rows after step %d dropped (resumed there)", dropped, last_step)
