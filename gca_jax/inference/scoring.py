"""The scorer an evaluation uses for a model, chosen by the model's registered capabilities.

Models with segmented prefill (``PREFILL``) are scored by the engine their class names in
``engine`` ("package.module:Class"; DRT's is ``Engine``): bounded device memory at any length,
host offload where the engine has it. Models with only full-forward scoring (``SCORE``, the
sliding-window baseline) are scored by ``FullForwardScorer``: one jitted forward per sequence,
so the longest length is bounded by device memory. Asking for offload, or for a model with
neither path, is a ``MissingCapabilityError`` naming the model; nothing falls back silently.

An engine (docs/inference.md, "Engines") has ``cfg`` and ``prefill(tokens_BxT, *, logits_at,
with_ce, progress, ...) -> PrefillOutput``; the engine of a ``DECODE`` model also has
``prompt_multiple`` and ``start_decoding(tokens_BxT, max_new_tokens) -> (logits_BxV, decoder)``
with ``decoder.feed(ids_B) -> logits_BxV``, which ``gca_jax.inference.generate`` uses.
"""

import importlib
import logging

from flax import nnx

from gca_jax.inference.full_forward import FullForwardScorer
from gca_jax.modeling import PREFILL, SCORE, model_class, require
from gca_jax.modeling.interface import MissingCapabilityError

_log = logging.getLogger(__name__)


def engine_class(model_type: str) -> type:
    """The inference engine class ``model_type``'s model names in its ``engine`` attribute.

    Raises:
      MissingCapabilityError: the model has no segmented prefill.
      TypeError: it declares ``prefill`` but names no importable engine.
    """
    cls = model_class(model_type)
    if PREFILL not in cls.capabilities:
        cls.require(PREFILL, model_type=model_type)
    spec = cls.engine
    module_name, _, name = (spec or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise TypeError(
            f"model_type={model_type!r} ({cls.__name__}) declares {PREFILL!r} but its engine "
            f"attribute {spec!r} is not an importable 'package.module:Class' ({e})"
        ) from e


def make_scorer(model: nnx.Module, *, segment_chunks: int, offload: bool = False):
    """The evaluation scorer of ``model``; every scorer has ``prefill(tokens, logits_at, with_ce)``.

    Raises:
      MissingCapabilityError: ``offload`` without segmented prefill, or no scoring path.
    """
    cfg = model.cfg
    if PREFILL in model_class(cfg.model_type).capabilities:
        cls = engine_class(cfg.model_type)
        _log.info("scoring %s with %s (%d chunks per segment)", cfg.model_type, cls.__name__,
                  segment_chunks)  # fmt: skip
        return cls(model, segment_chunks=segment_chunks, offload=offload)
    if offload:
        require(cfg, PREFILL)  # raises: offload is part of segmented prefill
    require(cfg, SCORE)
    _log.info("scoring %s with one full forward per sequence", cfg.model_type)
    return FullForwardScorer(model)


__all__ = ["MissingCapabilityError", "engine_class", "make_scorer"]
