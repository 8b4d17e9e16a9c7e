"""Tiny DRT models for inference tests (float32 compute so comparisons are tight)."""

import dataclasses

import pytest
from flax import nnx

from gca_jax.config import load_config
from gca_jax.modeling import build_model


def tiny_model_config(**overrides):
    """configs/tiny.yaml's model section in float32, with overrides."""
    cfg = load_config("configs/tiny.yaml").model
    return dataclasses.replace(cfg, **{"dtype": "float32", **overrides})


@pytest.fixture(scope="session")
def tiny_model():
    """Random-init tiny DRT ret x2 (S=15, P=16, W=32, K=3), float32."""
    return build_model(tiny_model_config(), rngs=nnx.Rngs(0))
