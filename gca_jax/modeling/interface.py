"""The interface every language model implements, and the evaluation paths it can declare.

A model type is one subclass of ``LanguageModel`` (one file), one line in the registry
(``gca_jax/modeling/registry.py``) and, when it has fields of its own, one config section
(``gca_jax/config.py``). Everything that differs between model types hangs off the class:
FLOPs per token (MFU), the names of its extra training statistics, and its ``capabilities``,
which decide the engine each evaluation command uses. A capability the model lacks is a
``MissingCapabilityError`` naming the model and the capability, never a fallback.
"""

from typing import ClassVar

import jax
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling.layers import Embedding, RMSNorm, to_dtype
from gca_jax.modeling.loss import next_token_loss, tied_logits

# Evaluation paths a model may support, with the words error messages use for them.
SCORE = "score"
PREFILL = "prefill"
DECODE = "decode"
RETRIEVAL = "retrieval"
CAPABILITIES: dict[str, str] = {
    SCORE: "full-forward scoring (one forward over the whole sequence)",
    PREFILL: "segmented long-context prefill (bounded memory at any length, --offload)",
    DECODE: "incremental decoding (eval.generate)",
    RETRIEVAL: "retrieval records per chunk (eval.inspect_retrieval)",
}


def token_embedding(cfg: ModelConfig, *, rngs: nnx.Rngs) -> Embedding:
    """The token embedding every model ties to its output head (``LanguageModel.embed``)."""
    return Embedding(
        cfg.vocab_size,
        cfg.hidden_size,
        pad_id=cfg.pad_id,
        std=cfg.init_std,
        param_dtype=to_dtype(cfg.param_dtype),
        rngs=rngs,
    )


def final_norm(cfg: ModelConfig) -> RMSNorm:
    """The norm before the head, in the compute dtype."""
    return RMSNorm(
        cfg.hidden_size,
        eps=cfg.rms_norm_eps,
        param_dtype=to_dtype(cfg.param_dtype),
        out_dtype=to_dtype(cfg.dtype),
    )


class MissingCapabilityError(ValueError):
    """A model asked for an evaluation path it does not implement."""


class LanguageModel(nnx.Module):
    """Base class of every registered language model.

    Subclasses set ``capabilities`` and implement ``hidden_states`` and ``flops_per_token``;
    ``loss`` and ``logits`` follow from them with the tied output head ``self.embed``. Models
    that declare ``PREFILL``/``DECODE`` name their inference engine in ``engine`` and implement
    the pieces it calls (for DRT: ``embed_chunks``, ``encode_chunks``, ``retrieve``, and the
    layer stacks with a cache argument).

    Attributes:
      cfg: the model's ``ModelConfig``.
      capabilities: the evaluation paths this model supports (keys of ``CAPABILITIES``).
      engine: "module:Class" of its inference engine, set by models with ``PREFILL``.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({SCORE})
    # "package.module:Class" of the inference engine that implements PREFILL (and DECODE) for
    # this model; a string, so modeling never imports inference (docs/inference.md, "Engines").
    engine: ClassVar[str | None] = None
    cfg: ModelConfig

    # -- what every model computes ---------------------------------------------------------------

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, T, D) at raw-token positions, and statistics.

        Args:
          tokens_BxT: raw token ids; negative ids are padding (embedded as pad_id, never a
            target). T must be a multiple of ``cfg.token_multiple``.
          gumbel_key: randomness of stochastic training-time choices (e.g. Gumbel top-k
            retrieval); None = deterministic (evaluation).

        Returns:
          (h (B, T, D) in the compute dtype, {name: scalar} with the names of
          ``stat_names``).
        """
        raise NotImplementedError

    def loss(
        self,
        tokens_BxT: jax.Array,
        *,
        gumbel_key: jax.Array | None = None,
        weights_BxT: jax.Array | None = None,
        **forward_kwargs,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-token CE over raw tokens, weighted by ``weights_BxT`` when given.

        Returns:
          (loss, {"loss", "tokens", "weight", *stat_names}).
        """
        h_BxTxD, stats = self.hidden_states(tokens_BxT, gumbel_key=gumbel_key, **forward_kwargs)
        loss, aux = next_token_loss(
            h_BxTxD,
            self.embed.table[...],
            tokens_BxT,
            block=self.cfg.loss_block,
            weights_BxT=weights_BxT,
        )
        return loss, {**aux, **stats}

    def logits(self, tokens_BxT: jax.Array, **forward_kwargs) -> jax.Array:
        """(B, T, V) float32 next-token logits at raw-token positions."""
        h_BxTxD, _ = self.hidden_states(tokens_BxT, **forward_kwargs)
        return tied_logits(h_BxTxD, self.embed.table[...])

    # -- what the registry asks of a model type -------------------------------------------------

    @classmethod
    def flops_per_token(cls, cfg: ModelConfig, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per raw token at sequence length T = seq_len."""
        raise NotImplementedError

    @classmethod
    def stat_names(cls, cfg: ModelConfig) -> tuple[str, ...]:
        """Names of the extra statistics ``hidden_states`` returns (logged while training)."""
        del cfg  # No extra statistics by default.
        return ()

    @classmethod
    def require(cls, capability: str, *, model_type: str) -> None:
        """Raises ``MissingCapabilityError`` unless this model supports ``capability``."""
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}; known: {sorted(CAPABILITIES)}")
        if capability not in cls.capabilities:
            have = "; ".join(CAPABILITIES[c] for c in sorted(cls.capabilities)) or "none"
            raise MissingCapabilityError(
                f"model_type={model_type!r} ({cls.__name__}) does not support "
                f"{CAPABILITIES[capability]}; it supports: {have}"
            )
