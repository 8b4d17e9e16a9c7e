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
    """Appends scalars to ``<dir>/metrics.jsonl`` and TensorBoard; a no-op off process 0."""

    def __init__(self, log_dir: str, *, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        self._jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a")  # noqa: SIM115
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(log_dir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float], *, prefix: str = "train") -> None:
        """Records one row of scalars (keys become ``prefix/key`` in TensorBoard)."""
        if not self.enabled:
            return
        row = {"step": step, "split": prefix, **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def close(self) -> None:
        """Flushes and closes both sinks."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._tb.close()
            self._jsonl = self._tb = None
