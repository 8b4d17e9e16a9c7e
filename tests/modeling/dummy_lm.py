"""A model type defined outside the library: one file that registers itself.

``python -m train --plugin tests.modeling.dummy_lm ...`` (and the eval commands) import this
module, which registers ``model_type: dummy_bag``. The model is deliberately small and
different: each position sees its own token and the running mean of the embeddings so far
(causal, no attention), so nothing in the registry, trainer or evaluation may assume DRT.
"""

import jax.numpy as jnp
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import SCORE, LanguageModel, register_model
from gca_jax.modeling.layers import Dense, Embedding, RMSNorm, to_dtype


class CausalBagLM(LanguageModel):
    """h_t = norm(E[x_t] + W mean_{s <= t} E[x_s]); tied head."""

    capabilities = frozenset({SCORE})

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pdt, d = to_dtype(cfg.param_dtype), cfg.hidden_size
        self.embed = Embedding(
            cfg.vocab_size, d, pad_id=cfg.pad_id, std=cfg.init_std, param_dtype=pdt, rngs=rngs
        )
        self.mix = Dense(
            d,
            d,
            logical_axes=("embed", "heads"),
            std=cfg.init_std,
            dtype=to_dtype(cfg.dtype),
            param_dtype=pdt,
            rngs=rngs,
        )
        self.final_norm = RMSNorm(
            d, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=to_dtype(cfg.dtype)
        )

    def hidden_states(self, tokens_BxT, *, gumbel_key=None):
        del gumbel_key  # Deterministic model.
        e_BxTxD = self.embed(tokens_BxT)
        t = tokens_BxT.shape[1]
        mean_BxTxD = jnp.cumsum(e_BxTxD, axis=1) / jnp.arange(1, t + 1)[None, :, None]
        h_BxTxD = self.final_norm(e_BxTxD + self.mix(mean_BxTxD).astype(jnp.float32))
        return h_BxTxD, {"bag_norm": jnp.mean(jnp.abs(mean_BxTxD))}

    @classmethod
    def flops_per_token(cls, cfg, seq_len):
        del seq_len  # No attention: the cost does not depend on T.
        d = cfg.hidden_size
        return 3.0 * 2 * (d * d + d * cfg.vocab_size)

    @classmethod
    def stat_names(cls, cfg):
        del cfg  # Unused.
        return ("bag_norm",)


register_model("dummy_bag", CausalBagLM)

__all__ = ["CausalBagLM"]
