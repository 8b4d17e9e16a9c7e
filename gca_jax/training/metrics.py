"""Metrics: one writer (metrics.jsonl + TensorBoard) on process 0, and the FLOPs / MFU estimate.

FLOPs model (per *raw* training token, forward + backward = 3 x forward, remat recompute not
counted, the usual MFU convention):

    forward per position = 2 * N_matmul + 4 * D * sum over attention layers of ctx_layer

where N_matmul counts the weights of every matmul a position goes through (projections, SwiGLU,
tied output head; the embedding lookup is free) and ctx_layer is the number of keys a query sees:
min(W + 1, T_pos) for sliding-window layers (W = -1: (T_pos + 1) / 2 on average, causal),
P for the chunk encoder (bidirectional within a chunk), K * P' for GCA. DRT runs on
T_pos = C * P positions (landmarks included) for T raw tokens, so its cost per raw token is
scaled by P / S. MFU = FLOPs/token * tokens/s / (devices * peak FLOP/s of one device).
"""

import json
import logging
import os

import jax

from gca_jax.config import ModelConfig

logger = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per raw token (fwd + bwd) of ``cfg`` at sequence length T = seq_len."""
    d, f, v = cfg.hidden_size, cfg.mlp_hidden, cfg.vocab_size
    kv = cfg.num_kv_heads * cfg.head_dim
    swa_mm = 2 * d * d + 2 * d * kv + 3 * d * f
    drt = cfg.model_type == "drt"
    positions = seq_len * cfg.slots_per_chunk // cfg.chunk_len if drt else seq_len
    ctx = (positions + 1) / 2 if cfg.window == -1 else min(cfg.window + 1, positions)
    layers = cfg.num_layers
    mm = layers * swa_mm + d * v
    attn = layers * ctx
    if drt:
        upper = layers - cfg.decoder_layers[0]
        mm += upper * 2 * d * d + cfg.encoder_layers * (4 * d * d + 3 * d * f) + 2 * d * d
        attn += upper * cfg.chunk_topk * cfg.memory_slots + cfg.encoder_layers * cfg.slots_per_chunk
    forward = 2 * mm + 4 * d * attn
    return 3.0 * forward * positions / seq_len


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
