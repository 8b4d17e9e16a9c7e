"""The model computes the same loss and gradients whichever kernel backend runs it."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from gca_jax.modeling import build_model
from tests.modeling.conftest import S, tiny_model_config


@pytest.mark.parametrize("model_type", ["drt", "swa_lm"])
def test_interpret_kernels_match_the_reference_backend(model_type):
    layers = 3 if model_type == "drt" else 2  # DRT: 1 lower layer + 2 groups of 1
    cfg = tiny_model_config(model_type=model_type, num_layers=layers, kernel_backend="xla")
    tokens = jax.random.randint(jax.random.key(0), (2, 5 * S), 0, 256)

    def loss_and_grads(backend):
        model = build_model(dataclasses.replace(cfg, kernel_backend=backend), rngs=nnx.Rngs(0))
        fn = lambda m: m.loss(tokens, gumbel_key=jax.random.key(1))[0]
        return jax.jit(nnx.value_and_grad(fn))(model)

    loss_x, grads_x = loss_and_grads("xla")
    loss_i, grads_i = loss_and_grads("interpret")
    np.testing.assert_allclose(loss_i, loss_x, rtol=1e-5)
    flat_x = jax.tree.leaves(nnx.state(grads_x))
    flat_i = jax.tree.leaves(nnx.state(grads_i))
    assert len(flat_x) == len(flat_i)
    for gx, gi in zip(flat_x, flat_i):
        np.testing.assert_allclose(gi, gx, rtol=2e-4, atol=2e-6)
