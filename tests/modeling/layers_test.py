"""mixed_matmul: the values and gradients of autodiff, every product in the compute dtype."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.modeling.layers import mixed_matmul
from gca_jax.modeling.loss import blocked_cross_entropy


def _inputs(transposed: bool, seed: int = 0):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, 5, 24), jnp.float32)
    w = jax.random.normal(kw, (40, 24) if transposed else (24, 40), jnp.float32)
    return x, w


def _plain(x, w, transposed):
    return jnp.einsum("btk,nk->btn" if transposed else "btk,kn->btn", x, w, precision="highest")


@pytest.mark.parametrize("transposed", [False, True])
def test_float32_equals_plain_autodiff(transposed):
    x, w = _inputs(transposed)
    ct = jax.random.normal(jax.random.key(9), (2, 5, 40))
    with jax.default_matmul_precision("highest"):
        y, pull = jax.vjp(
            lambda x, w: mixed_matmul(x, w, jnp.float32, jnp.float32, transposed), x, w
        )
        dx, dw = pull(ct)
    y_ref, pull_ref = jax.vjp(lambda x, w: _plain(x, w, transposed), x, w)
    dx_ref, dw_ref = pull_ref(ct)
    for a, b in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_bf16_products_and_float32_param_gradient(transposed):
    x, w = _inputs(transposed, seed=1)
    x16 = x.astype(jnp.bfloat16)
    loss = lambda x, w: jnp.sum(mixed_matmul(x, w, jnp.bfloat16, jnp.float32, transposed) ** 2)
    dx, dw = jax.grad(loss, argnums=(0, 1))(x16, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32  # dx like x, dw like w
    ref_loss = lambda x, w: jnp.sum(_plain(x, w, transposed) ** 2)
    dx_ref, dw_ref = jax.grad(ref_loss, argnums=(0, 1))(x16.astype(jnp.float32), w)
    for a, b in ((dx, dx_ref), (dw, dw_ref)):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=3e-2 * scale)
    # Every dot of the forward and backward multiplies bf16 by bf16 (none falls back to f32).
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x16, w).as_text()
    dots = re.findall(r"stablehlo.dot_general.*?: \((tensor<[^)]*)\)", hlo)
    assert len(dots) == 3, dots
    for operands in dots:
        assert operands.count("bf16") == 2, operands


def test_loss_pads_the_vocabulary_without_changing_the_value():
    """V = 300 is padded to 384 inside the loss; padded columns must not enter the softmax."""
    kh, kt, ky = jax.random.split(jax.random.key(3), 3)
    h = jax.random.normal(kh, (10, 16), jnp.float32)
    table = jax.random.normal(kt, (300, 16), jnp.float32)
    targets = jax.random.randint(ky, (10,), 0, 300)
    total, count = blocked_cross_entropy(h, table, targets, block=4)
    logits = jnp.einsum("nd,vd->nv", h, table, precision="highest")
    ref = jnp.sum(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(10), targets])
    np.testing.assert_allclose(total, ref, rtol=1e-5)
    assert int(count) == 10
