"""BaseLM: the sliding-window ALiBi transformer baseline (spec §4, ``slide_window_lm``).

The same decoder layers as DRT's lower stack, ``sum(decoder_layers)`` of them, over raw tokens
(no landmarks). With ``window = -1`` it is the full-attention transformer used for comparisons.
"""

import jax
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling.blocks import DecoderLayer
from gca_jax.modeling.layers import Embedding, RMSNorm, to_dtype
from gca_jax.modeling.loss import next_token_loss, tied_logits
from gca_jax.modeling.stack import apply_stack, make_stack


class SlidingWindowLM(nnx.Module):
    """Decoder-only LM with sliding-window (or full, window -1) ALiBi attention."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.model_type != "swa_lm":
            raise ValueError(f"SlidingWindowLM needs model_type='swa_lm', got {cfg.model_type!r}")
        self.cfg = cfg
        pdt = to_dtype(cfg.param_dtype)
        self.embed = Embedding(
            cfg.vocab_size,
            cfg.hidden_size,
            pad_id=cfg.pad_id,
            std=cfg.init_std,
            param_dtype=pdt,
            rngs=rngs,
        )
        self.layers = make_stack(lambda r: DecoderLayer(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = RMSNorm(
            cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=to_dtype(cfg.dtype)
        )

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, T, D); ``gumbel_key`` is unused (no retrieval)."""
        del gumbel_key  # No retrieval in this model.
        h_BxTxD = apply_stack(self.layers, self.embed(tokens_BxT), remat=self.cfg.remat)
        return self.final_norm(h_BxTxD), {}

    def loss(
        self,
        tokens_BxT: jax.Array,
        *,
        gumbel_key: jax.Array | None = None,
        weights_BxT: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-token CE over raw tokens, weighted by ``weights_BxT`` when given."""
        h_BxTxD, stats = self.hidden_states(tokens_BxT, gumbel_key=gumbel_key)
        loss, aux = next_token_loss(
            h_BxTxD,
            self.embed.table[...],
            tokens_BxT,
            block=self.cfg.loss_block,
            weights_BxT=weights_BxT,
        )
        return loss, {**aux, **stats}

    def logits(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T, V) float32 logits."""
        h_BxTxD, _ = self.hidden_states(tokens_BxT)
        return tied_logits(h_BxTxD, self.embed.table[...])
