"""FLOPs per token of the layer types models are built from, for the MFU estimate.

Convention (the usual MFU one): forward FLOPs per position = 2 * N_matmul + 4 * D * ctx, with
N_matmul the weights of every matmul a position goes through (projections, SwiGLU, the tied
head; the embedding lookup is free) and ctx the number of keys its attention layers see in all;
training = 3 x forward (remat recompute not counted).
"""

from gca_jax.config import ModelConfig

TRAIN_FACTOR = 3.0  # forward + backward (twice the forward)


def decoder_layer_weights(cfg: ModelConfig) -> int:
    """Matmul weights of one decoder layer: q, k, v, o projections and the SwiGLU."""
    d, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
    return 2 * d * d + 2 * d * kv + 3 * d * cfg.mlp_hidden


def window_context(window: int, positions: int) -> float:
    """Mean keys per query of causal attention over ``positions``: W + 1, or (T + 1) / 2."""
    return (positions + 1) / 2 if window == -1 else min(window + 1, positions)


def forward_flops(weights: float, context: float, dim: int) -> float:
    """Forward FLOPs of one position with ``weights`` matmul weights and ``context`` keys."""
    return 2 * weights + 4 * dim * context
