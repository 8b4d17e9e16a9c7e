"""The model registry: ``model_type`` -> model class, the single source of truth.

The config's valid ``model_type`` values, the FLOPs/MFU formula, the logged statistics and the
engine each evaluation command uses all come from the class registered here. Adding a model is
one file (a ``LanguageModel`` subclass), one line in ``MODELS`` and, when it has fields of its
own, one config section (docs/architecture.md, "Adding a model"). Code outside the project
(plugins, tests) adds model types with ``register_model``; the command-line tools import such a
module with ``--plugin MODULE``.
"""

import importlib

from flax import nnx

from gca_jax.config import Config, ConfigError, ModelConfig
from gca_jax.modeling.brt import BlockRecurrentLM
from gca_jax.modeling.drt import DRT
from gca_jax.modeling.interface import LanguageModel
from gca_jax.modeling.landmark import LandmarkLM
from gca_jax.modeling.rpt import RPT
from gca_jax.modeling.swa_lm import SlidingWindowLM

MODELS: dict[str, type[LanguageModel]] = {
    "brt": BlockRecurrentLM,
    "drt": DRT,
    "landmark": LandmarkLM,
    "rpt": RPT,  # RPT-style, fixed BM25 retriever
    "swa_lm": SlidingWindowLM,
}


def register_model(model_type: str, cls: type[LanguageModel]) -> None:
    """Adds a model type (for plugins and tests); re-registering the same class is a no-op.

    Raises:
      TypeError: ``cls`` is not a ``LanguageModel`` subclass.
      ValueError: ``model_type`` is already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, LanguageModel)):
        raise TypeError(f"register_model({model_type!r}, ...): {cls!r} is not a LanguageModel")
    if MODELS.get(model_type, cls) is not cls:
        raise ValueError(f"model_type {model_type!r} is already registered to {MODELS[model_type]}")
    MODELS[model_type] = cls


def load_plugins(modules: list[str]) -> None:
    """Imports each module (it calls ``register_model``); a missing module is a clear error.

    Raises:
      ValueError: a module cannot be imported.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"--plugin {name}: cannot import it ({e})") from e


def model_class(model_type: str) -> type[LanguageModel]:
    """The class registered for ``model_type``.

    Raises:
      ConfigError: unknown model type; the message lists the registered ones.
    """
    if model_type not in MODELS:
        raise ConfigError(
            f"config error: model.model_type={model_type!r}: must be one of {sorted(MODELS)} "
            "(the model registry, gca_jax/modeling/registry.py)"
        )
    return MODELS[model_type]


def check_config(cfg: Config | ModelConfig) -> Config | ModelConfig:
    """Checks that the config names a registered model type; returns the config.

    Raises:
      ConfigError: unknown model type.
    """
    model_class((cfg.model if isinstance(cfg, Config) else cfg).model_type)
    return cfg


def require(cfg: ModelConfig, capability: str) -> type[LanguageModel]:
    """The model class of ``cfg``, after checking that it supports ``capability``.

    Raises:
      ConfigError: unknown model type.
      MissingCapabilityError: the model does not support ``capability``.
    """
    cls = model_class(cfg.model_type)
    cls.require(capability, model_type=cfg.model_type)
    return cls


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs) -> LanguageModel:
    """Instantiates the model named by ``cfg.model_type``.

    Raises:
      ConfigError: the model type is not registered.
    """
    return model_class(cfg.model_type)(cfg, rngs=rngs)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per raw token of ``cfg``'s model at T = seq_len (for MFU)."""
    return model_class(cfg.model_type).flops_per_token(cfg, seq_len)


def stat_names(cfg: ModelConfig) -> tuple[str, ...]:
    """Names of the extra statistics the model of ``cfg`` reports while training."""
    return model_class(cfg.model_type).stat_names(cfg)
