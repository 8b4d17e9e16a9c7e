"""Evaluation by one full forward, for models whose only scoring path is ``score``.

``FullForwardScorer.prefill`` has the evaluation subset of ``Engine.prefill``'s interface
(logits at chosen positions, CE sums), so ``eval.ppl`` and ``eval.passkey`` score the BaseLM
(``model_type: swa_lm``) and any other ``LanguageModel`` with the same code as DRT
(``gca_jax.inference.make_scorer`` chooses). It runs the whole sequence in one jitted
forward: activations grow linearly with T (the attention kernels are O(T * W)) and only the
requested positions' logits are formed, but there is no segmentation, so the longest length
is bounded by device memory.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.inference.engine import PrefillOutput
from gca_jax.modeling.chunking import next_token_targets
from gca_jax.modeling.loss import blocked_cross_entropy, tied_logits


def _forward(graphdef, params, tokens_BxT, pos_BxQ, *, with_ce: bool):
    model = nnx.merge(graphdef, params)
    h_BxTxD, _ = model.hidden_states(tokens_BxT)
    h_BxQxD = jnp.take_along_axis(h_BxTxD, pos_BxQ[:, :, None], axis=1)
    logits = tied_logits(h_BxQxD, model.embed.table[...])
    if not with_ce:
        return logits, None, None
    b, t, _ = h_BxTxD.shape
    targets_BxT = next_token_targets(tokens_BxT)
    sums, counts = jax.vmap(
        lambda h, tgt: blocked_cross_entropy(
            h, model.embed.table[...], tgt, block=model.cfg.loss_block
        )
    )(h_BxTxD, targets_BxT)
    return logits, sums, counts


class FullForwardScorer:
    """Scores a ``LanguageModel`` (e.g. ``SlidingWindowLM``) in one forward per sequence.

    Args:
      model: a model whose ``hidden_states(tokens)`` returns (B, T, D) final-normed states and
        whose ``embed`` is the tied output head.
    """

    def __init__(self, model: nnx.Module):
        self.cfg = model.cfg
        self.graphdef, self.params = nnx.split(model)
        self._forward = jax.jit(
            functools.partial(_forward, self.graphdef), static_argnames=("with_ce",)
        )

    def prefill(
        self, tokens_BxT, *, logits_at=None, with_ce: bool = False, progress=None, **unused
    ) -> PrefillOutput:
        """Logits at ``logits_at`` (Q,) or (B, Q) and optional CE sums; see ``Engine.prefill``.

        Raises:
          ValueError: empty input, positions out of range, or an option only DRT's engine has.
        """
        unsupported = sorted(k for k, v in unused.items() if v not in (None, False))
        if unsupported:
            raise ValueError(f"{unsupported} need the DRT inference engine (gca_jax.inference)")
        tokens = np.asarray(tokens_BxT, np.int32)
        if tokens.ndim != 2 or tokens.shape[1] < 1:
            raise ValueError(f"tokens must be (B, T) with T >= 1, got shape {tokens.shape}")
        b, t = tokens.shape
        pos = np.zeros((b, 1), np.int32) if logits_at is None else np.asarray(logits_at, np.int32)
        pos = np.broadcast_to(pos.reshape(1, -1) if pos.ndim == 1 else pos, (b, pos.shape[-1]))
        if pos.min() < 0 or pos.max() >= t:
            raise ValueError(f"logits_at positions must be in [0, {t}), got {pos.tolist()}")
        logits, sums, counts = self._forward(
            self.params, tokens, np.ascontiguousarray(pos), with_ce=with_ce
        )
        if progress is not None:
            progress(t * b)
        return PrefillOutput(
            logits=None if logits_at is None else np.asarray(logits),
            ce_sum=None if sums is None else np.asarray(sums),
            ce_count=None if counts is None else np.asarray(counts),
            carry=None,
            retrievals=None,
            pad=0,
        )
