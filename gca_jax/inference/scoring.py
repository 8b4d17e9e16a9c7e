"""The scorer an evaluation uses for a model, chosen by the model's registered capabilities.

Models with segmented prefill (``PREFILL``, DRT) are scored by ``Engine``: bounded device memory
at any length, host offload available. Models with only full-forward scoring (``SCORE``, the
sliding-window baseline) are scored by ``FullForwardScorer``: one jitted forward per sequence,
so the longest length is bounded by device memory. Asking for offload, or for a model with
neither path, is a ``MissingCapabilityError`` naming the model; nothing falls back silently.
"""

import logging

from flax import nnx

from gca_jax.inference.engine import Engine
from gca_jax.inference.full_forward import FullForwardScorer
from gca_jax.modeling import PREFILL, SCORE, model_class, require

_log = logging.getLogger(__name__)


def make_scorer(
    model: nnx.Module, *, segment_chunks: int, offload: bool = False
) -> Engine | FullForwardScorer:
    """The evaluation scorer of ``model`` (both have ``prefill(tokens, logits_at, with_ce)``).

    Raises:
      MissingCapabilityError: ``offload`` without segmented prefill, or no scoring path.
    """
    cfg = model.cfg
    if PREFILL in model_class(cfg.model_type).capabilities:
        _log.info("scoring %s with segmented prefill (%d chunks per segment)", cfg.model_type,
                  segment_chunks)  # fmt: skip
        return Engine(model, segment_chunks=segment_chunks, offload=offload)
    if offload:
        require(cfg, PREFILL)  # raises: offload is part of segmented prefill
    require(cfg, SCORE)
    _log.info("scoring %s with one full forward per sequence", cfg.model_type)
    return FullForwardScorer(model)
