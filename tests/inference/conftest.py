"""Tiny DRT models for inference tests (float32 compute so comparisons are tight)."""

import pytest
from flax import nnx

from gca_jax.modeling import build_model
from tests.modeling.conftest import tiny_model_config


@pytest.fixture(scope="session")
def tiny_model():
    """Random-init tiny DRT ret x2 (S=15, P=16, W=32, K=3), float32."""
    return build_model(tiny_model_config(), rngs=nnx.Rngs(0))
