"""Tiny DRT models for inference tests (float32 compute so comparisons are tight)."""

import types

import pytest
from flax import nnx

from gca_jax.modeling import build_model
from tests.modeling.conftest import tiny_model_config


@pytest.fixture(scope="session")
def tiny_model():
    """Random-init tiny DRT ret x2 (S=15, P=16, W=32, K=3), float32."""
    return build_model(tiny_model_config(), rngs=nnx.Rngs(0))


class TokenByToken:
    """An engine whose decoders hide their fused spans: ``generate`` then feeds token by token,
    the reference for the fused path."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def start_decoding(self, tokens_BxT, max_new_tokens):
        logits_BxV, decoder = self.engine.start_decoding(tokens_BxT, max_new_tokens)
        return logits_BxV, types.SimpleNamespace(feed=decoder.feed)
