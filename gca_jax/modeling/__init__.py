"""flax.nnx language models: one interface (``LanguageModel``), a registry keyed by model_type."""

import jax
from flax import nnx

from gca_jax.modeling.drt import DRT
from gca_jax.modeling.interface import (
    CAPABILITIES,
    DECODE,
    PREFILL,
    RETRIEVAL,
    SCORE,
    LanguageModel,
    MissingCapabilityError,
)
from gca_jax.modeling.landmark import LandmarkLM
from gca_jax.modeling.registry import (
    MODELS,
    build_model,
    check_config,
    flops_per_token,
    load_plugins,
    model_class,
    register_model,
    require,
    stat_names,
)
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from gca_jax.modeling.swa_lm import SlidingWindowLM


def count_params(model: nnx.Module) -> int:
    """Number of parameters (all nnx.Param leaves)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = [
    "CAPABILITIES",
    "DECODE",
    "DRT",
    "LandmarkLM",
    "MODELS",
    "PREFILL",
    "RETRIEVAL",
    "SCORE",
    "ChunkMemory",
    "LanguageModel",
    "MissingCapabilityError",
    "Retrieval",
    "SlidingWindowLM",
    "build_model",
    "check_config",
    "count_params",
    "flops_per_token",
    "load_plugins",
    "model_class",
    "register_model",
    "require",
    "stat_names",
]
