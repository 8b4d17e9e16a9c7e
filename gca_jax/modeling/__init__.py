"""flax.nnx models of DRT and its baselines, built through a registry keyed by ``model_type``."""

from collections.abc import Callable

import jax
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling.drt import DRT
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from gca_jax.modeling.swa_lm import SlidingWindowLM

MODEL_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "drt": DRT,
    "swa_lm": SlidingWindowLM,
}


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """Instantiates the model named by ``cfg.model_type``.

    Raises:
      ValueError: the model type is not registered.
    """
    if cfg.model_type not in MODEL_REGISTRY:
        raise ValueError(f"unknown model_type={cfg.model_type!r}; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[cfg.model_type](cfg, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of parameters (all nnx.Param leaves)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = [
    "DRT",
    "MODEL_REGISTRY",
    "ChunkMemory",
    "Retrieval",
    "SlidingWindowLM",
    "build_model",
    "count_params",
]
