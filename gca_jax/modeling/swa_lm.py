"""BaseLM: the sliding-window ALiBi transformer baseline (docs/spec.md §4, ``slide_window_lm``).

The same decoder layers as DRT's lower stack, ``model.num_layers`` of them, over raw tokens (no
landmarks). With ``window = -1`` it is the full-attention transformer used for comparisons.
Long inputs and generation run through ``gca_jax.inference.swa_engine`` (constant memory: the
layers' window caches are the whole state).
"""

import jax
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import flops
from gca_jax.modeling.blocks import DecoderLayer
from gca_jax.modeling.interface import (
    DECODE,
    PREFILL,
    SCORE,
    LanguageModel,
    final_norm,
    token_embedding,
)
from gca_jax.modeling.stack import apply_stack, make_stack


class SlidingWindowLM(LanguageModel):
    """Decoder-only LM with sliding-window (or full, window -1) ALiBi attention."""

    capabilities = frozenset({SCORE, PREFILL, DECODE})
    engine = "gca_jax.inference.swa_engine:SlidingWindowEngine"

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = token_embedding(cfg, rngs=rngs)
        self.layers = make_stack(lambda r: DecoderLayer(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = final_norm(cfg)

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, T, D); ``gumbel_key`` is unused (no retrieval)."""
        del gumbel_key  # No retrieval in this model.
        h_BxTxD = apply_stack(self.layers, self.embed(tokens_BxT), remat=self.cfg.remat)
        return self.final_norm(h_BxTxD), {}

    @classmethod
    def flops_per_token(cls, cfg: ModelConfig, seq_len: int) -> float:
        """Decoder layers over T positions plus the tied head (``gca_jax.modeling.flops``)."""
        weights = (
            cfg.num_layers * flops.decoder_layer_weights(cfg) + cfg.hidden_size * cfg.vocab_size
        )
        context = cfg.num_layers * flops.window_context(cfg.window, seq_len)
        return flops.TRAIN_FACTOR * flops.forward_flops(weights, context, cfg.hidden_size)
