"""gca_jax.sharding: mesh sizes, logical-axis rules, shard_map kernel wrappers on 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gca_jax import sharding
from gca_jax.config import MeshConfig
from kernels.gca import gca_attention, gca_decode
from kernels.landmark import landmark_attention
from kernels.swa import sliding_window_attention, sliding_window_decode

needs8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")


def test_mesh_shape_fills_the_free_axis_and_names_the_keys_on_mismatch():
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
    assert sharding.mesh_shape(MeshConfig(data=1, fsdp=-1, tensor=1), 4) == (1, 4, 1)
    with pytest.raises(ValueError, match="mesh.data"):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3, tensor=1), 8)
    with pytest.raises(ValueError, match="8 are available"):
        sharding.mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)


@needs8
def test_logical_rules():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    # stacked layer axis replicated; an odd vocab is replicated rather than failing
    assert sharding.logical_to_spec(("embed", "heads"), (3, 64, 64), mesh) == P(
        None, "fsdp", "tensor"
    )
    assert sharding.logical_to_spec(("vocab", "embed"), (259, 64), mesh) == P(None, "fsdp")
    assert sharding.logical_to_spec(("norm",), (64,), mesh) == P(None)
    with pytest.raises(KeyError, match="bogus"):
        sharding.logical_to_spec(("bogus",), (4,), mesh)


@needs8
def test_kernel_wrappers_equal_the_kernels_under_a_mesh():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    keys = jax.random.split(jax.random.key(0), 6)
    b, t, h, d = 4, 32, 4, 8
    q, k, v = (jax.random.normal(kk, (b, t, h, d), jnp.float32) for kk in keys[:3])
    slopes = jnp.exp2(-jnp.arange(1, h + 1, dtype=jnp.float32))
    want = sliding_window_attention(q, k, v, window=8, alibi_slopes=slopes, backend="xla")
    c, p, e, kk = 4, 8, 4, 2
    qg = jax.random.normal(keys[3], (b, c, p, h, d), jnp.float32)
    mem = jax.random.normal(keys[4], (b, e, p, h, d), jnp.float32)
    idx = jnp.broadcast_to(jnp.array([0, 1], jnp.int32), (b, c, kk))
    w = jax.nn.softmax(jax.random.normal(keys[5], (b, c, kk)), axis=-1)
    want_g = gca_attention(qg, mem, mem * 2, idx, w, scale=0.3, backend="xla")

    @jax.jit
    def run(q, k, v, qg, mem, idx, w):
        o = sharding.sliding_window_attention(q, k, v, window=8, alibi_slopes=slopes, backend="xla")
        g = sharding.gca_attention(qg, mem, mem * 2, idx, w, scale=0.3, backend="xla")
        return o, g

    with jax.set_mesh(mesh):
        got, got_g = run(q, k, v, qg, mem, idx, w)
        text = run.lower(q, k, v, qg, mem, idx, w).as_text()
    assert "shard_map" in text or "manual" in text  # the wrappers really partitioned
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_g), np.asarray(want_g), rtol=1e-5, atol=1e-6)
    # No mesh: a plain call.
    np.testing.assert_allclose(
        np.asarray(
            sharding.sliding_window_attention(q, k, v, window=8, alibi_slopes=slopes, backend="xla")
        ),
        np.asarray(want),
        rtol=1e-6,
    )


@needs8
def test_decode_wrappers_equal_the_kernels_under_a_mesh():
    """The decode kernels (one query position) also run split over batch and heads."""
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    keys = jax.random.split(jax.random.key(1), 6)
    b, n, h, d, kk, s = 4, 9, 4, 8, 3, 5
    q = jax.random.normal(keys[0], (b, h, d), jnp.float32)
    ring_k, ring_v = (jax.random.normal(k, (b, n, h, d), jnp.float32) for k in keys[1:3])
    q_pos = jnp.full((b,), 11, jnp.int32)
    key_pos = jnp.broadcast_to(jnp.arange(3, 3 + n, dtype=jnp.int32), (b, n)).at[1, 0].set(-1)
    slopes = jnp.exp2(-jnp.arange(1, h + 1, dtype=jnp.float32))
    want = sliding_window_decode(q, ring_k, ring_v, key_pos, q_pos, window=6, alibi_slopes=slopes)
    qg = jax.random.normal(keys[3], (b, 1, h, d), jnp.float32)
    mem = jax.random.normal(keys[4], (b, kk, s, h, d), jnp.float32)
    w = jax.nn.softmax(jax.random.normal(keys[5], (b, kk)), axis=-1)
    want_g = gca_decode(qg, mem, mem * 2, w, scale=0.3, backend="xla")

    @jax.jit
    def run(q, ring_k, ring_v, key_pos, q_pos, qg, mem, w):
        o = sharding.sliding_window_decode(
            q, ring_k, ring_v, key_pos, q_pos, window=6, alibi_slopes=slopes
        )
        g = sharding.gca_decode(qg, mem, mem * 2, w, scale=0.3, backend="xla")
        return o, g

    args = (q, ring_k, ring_v, key_pos, q_pos, qg, mem, w)
    with jax.set_mesh(mesh):
        got, got_g = run(*args)
        text = run.lower(*args).as_text()
    assert "shard_map" in text or "manual" in text
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_g), np.asarray(want_g), rtol=1e-5, atol=1e-6)


@needs8
def test_landmark_wrapper_equals_the_kernel_under_a_mesh():
    """Landmark attention (whole causal past, blocks of 8 with a landmark last) split too."""
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    keys = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(kk, (4, 32, 4, 8), jnp.float32) for kk in keys)
    want = landmark_attention(q, k, v, block_len=8, backend="xla")
    run = jax.jit(lambda *a: sharding.landmark_attention(*a, block_len=8, backend="xla"))
    with jax.set_mesh(mesh):
        got = run(q, k, v)
        text = run.lower(q, k, v).as_text()
    assert "shard_map" in text or "manual" in text
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
