"""Landmark kernels: reference vs a dense oracle written from the grouped-softmax formulas,
Pallas (interpret on CPU, pallas on GPU) vs the reference, CUDA lowering on CPU, vmap/remat,
input validation."""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels._backend import UnsupportedInputError
from kernels.landmark import landmark_attention
from kernels.landmark._common import LandmarkBlockConfig
from kernels.landmark.reference import landmark_attention_reference
from tests.kernels import harness
from tests.kernels.tolerances import assert_close


class Spec(typing.NamedTuple):
    """Sizes of one test case: q (B, T, H, d), k/v (B, T, Hkv, d), blocks of P positions."""

    B: int
    T: int
    H: int
    Hkv: int
    d: int
    P: int


SPECS = {
    "gqa_t64_p16": Spec(B=2, T=64, H=4, Hkv=2, d=16, P=16),  # 4 blocks: 0 to 3 past blocks.
    "mqa3_t96_p32_d24": Spec(B=1, T=96, H=3, Hkv=1, d=24, P=32),  # Group of 3; d padded.
    "gpu_t2048_p64": Spec(B=2, T=2048, H=4, Hkv=2, d=64, P=64),
    "gpu_t1024_p128_d64": Spec(B=1, T=1024, H=2, Hkv=2, d=64, P=128),
    "gpu_t1024_p64_d128": Spec(B=1, T=1024, H=2, Hkv=2, d=128, P=64),
}
GPU_ONLY = ("gpu_t2048_p64", "gpu_t1024_p128_d64", "gpu_t1024_p64_d128")
GRADS = ("dq", "dk", "dv")


def make_inputs(seed, B, T, H, Hkv, d, dtype):
    """Random q, k, v and the output's cotangent."""
    rng = np.random.default_rng(seed)
    q = harness.normal(rng, (B, T, H, d), dtype)
    k = harness.normal(rng, (B, T, Hkv, d), dtype)
    v = harness.normal(rng, (B, T, Hkv, d), dtype)
    ct = harness.normal(rng, (B, T, H, d), dtype)
    return q, k, v, ct


def dense_landmark_attention(q_BxTxHxd, k_BxTxKxd, v_BxTxKxd, *, block_len, scale=None):
    """The grouped softmax with a full (T, T) probability matrix, term by term, f32.

    p_it = e^{s_it} / Z_i for t in L_i (own block, t <= i, not the landmark), and
    p_it = (e^{s_i,l_j} / Z_i) * e^{s_it} / sum_{u in block j, u != l_j} e^{s_iu} for a
    non-landmark t of a past block j; Z_i = sum_{L_i} e^{s_it} + sum_{j < b(i)} e^{s_i,l_j}.
    """
    B, T, H, d = q_BxTxHxd.shape
    G, P = H // k_BxTxKxd.shape[2], block_len
    scale = d**-0.5 if scale is None else scale
    k_BxTxHxd = jnp.repeat(k_BxTxKxd, G, axis=2).astype(jnp.float32)
    v_BxTxHxd = jnp.repeat(v_BxTxKxd, G, axis=2).astype(jnp.float32)
    s = jnp.einsum("bqhd,bkhd->bhqk", q_BxTxHxd.astype(jnp.float32), k_BxTxHxd) * scale
    # Subtracting each row's max changes no ratio below (every term is one e^s over a sum).
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    i, t = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    blk_i, blk_t, is_lmk_t = i // P, t // P, t % P == P - 1
    own = (blk_t == blk_i) & (t <= i) & ~is_lmk_t
    past_lmk = (blk_t < blk_i) & is_lmk_t
    past_tok = (blk_t < blk_i) & ~is_lmk_t
    z = jnp.sum(jnp.where(own | past_lmk, e, 0.0), axis=-1, keepdims=True)
    e_blocks = e.reshape(B, H, T, T // P, P)
    in_block_sum = jnp.sum(e_blocks[..., : P - 1], axis=-1)  # (B, H, T, C) non-landmark sums
    lmk = e_blocks[..., P - 1]  # (B, H, T, C) landmark terms
    blk_of_t = jnp.broadcast_to(blk_t, (B, H, T, T))
    lmk_of_t = jnp.take_along_axis(lmk, blk_of_t, axis=-1)
    sum_of_t = jnp.take_along_axis(in_block_sum, blk_of_t, axis=-1)
    p = jnp.where(own, e / z, 0.0) + jnp.where(past_tok, (lmk_of_t / z) * e / sum_of_t, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v_BxTxHxd)


@functools.cache  # One function per setting: harness.fwd_and_vjp caches compilations by it.
def attend(backend, *, block_len, scale=None):
    """landmark_attention as a function of q, k, v."""
    return lambda q, k, v: landmark_attention(
        q, k, v, block_len=block_len, scale=scale, backend=backend
    )


@functools.cache
def dense(*, block_len, scale=None):
    """dense_landmark_attention as a function of q, k, v."""
    return lambda q, k, v: dense_landmark_attention(q, k, v, block_len=block_len, scale=scale)


def assert_all_close(got, want, dtype):
    (out, grads), (ref_out, ref_grads) = got, want
    assert_close(out, ref_out, dtype=dtype, kind="out", name="out")
    for name, g, w in zip(GRADS, grads, ref_grads, strict=True):
        assert_close(g, w, dtype=dtype, kind="grad", name=name)


def test_probabilities_sum_to_one_and_skip_landmark_values():
    # Values of one: the output is the sum of the probabilities, 1 for every query. Values that
    # are nonzero only at landmarks: the output is 0 (landmarks carry no value weight).
    B, T, H, d, P = 1, 24, 2, 8, 4
    q, k, _, _ = make_inputs(0, B, T, H, H, d, jnp.float32)
    ones = jnp.ones((B, T, H, d), jnp.float32)
    np.testing.assert_allclose(landmark_attention_reference(q, k, ones, block_len=P), 1.0, 1e-5)
    lmk_only = ones * (jnp.arange(T) % P == P - 1)[None, :, None, None]
    out = landmark_attention_reference(q, k, lmk_only, block_len=P)
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


@settings(max_examples=5)
@given(
    B=st.sampled_from([1, 2]),
    blocks=st.sampled_from([1, 2, 5]),
    P=st.sampled_from([2, 3, 8]),
    heads=st.sampled_from([(2, 2), (4, 2), (3, 1)]),
    seed=st.integers(0, 2**16),
)
def test_reference_matches_dense(B, blocks, P, heads, seed):
    H, Hkv = heads
    q, k, v, ct = make_inputs(seed, B, blocks * P, H, Hkv, 8, jnp.float32)
    got = harness.fwd_and_vjp(attend("xla", block_len=P), (q, k, v), ct)
    want = harness.fwd_and_vjp(dense(block_len=P), (q, k, v), ct)
    assert_all_close(got, want, jnp.float32)


@pytest.mark.parametrize("backend,shape,dtype", harness.kernel_cases(SPECS, gpu_only=GPU_ONLY))
def test_forward_and_vjp_match_reference(backend, shape, dtype):
    spec = SPECS[shape]
    q, k, v, ct = make_inputs(
        list(SPECS).index(shape), spec.B, spec.T, spec.H, spec.Hkv, spec.d, dtype
    )
    if spec.P > 64 and jnp.dtype(dtype).itemsize > 2:  # Measured: does not fit shared memory.
        with pytest.raises(UnsupportedInputError, match="shared memory"):
            attend(backend, block_len=spec.P)(q, k, v)
        return
    got, _ = harness.check_against_reference(
        attend(backend, block_len=spec.P),
        attend("xla", block_len=spec.P),
        (q, k, v),
        ct,
        dtype=dtype,
        names=GRADS,
    )
    if spec.T <= 128:  # Short enough for the dense formula as a second oracle.
        f32 = harness.to_float32((q, k, v))
        assert_all_close(got, harness.fwd_and_vjp(dense(block_len=spec.P), f32, ct), dtype)


@pytest.mark.parametrize("backend", harness.backends())
def test_vmap_remat_and_scale(backend):
    q, k, v, ct = make_inputs(13, 2, 32, 2, 1, 16, jnp.float32)  # vmapped over the batch axis.

    def op(backend):
        per_row = attend(backend, block_len=16, scale=0.3)
        return lambda q, k, v: per_row(q[None], k[None], v[None])[0]

    harness.check_vmap_and_remat(op, (q, k, v), ct, backend=backend, names=GRADS)


def test_block_config_defaults_and_validation():
    assert LandmarkBlockConfig.default(64, 64) == LandmarkBlockConfig()
    assert LandmarkBlockConfig.default(64, 128).num_warps == 8
    with pytest.raises(ValueError, match="num_warps"):
        LandmarkBlockConfig(num_warps=0)


@pytest.mark.parametrize(
    "shape,P,dtype",
    [
        ((4, 16384, 12, 12, 64), 64, jnp.bfloat16),  # The Landmark-128M layer at 16K.
        ((1, 512, 3, 1, 48), 32, jnp.float32),  # Group of 3, d padded, f32.
        ((1, 1024, 4, 4, 64), 128, jnp.bfloat16),  # Wider blocks (8 warps).
        ((1, 1024, 4, 4, 128), 64, jnp.bfloat16),  # Wider heads.
    ],
)
def test_cuda_lowering_on_cpu(shape, P, dtype):
    B, T, H, Hkv, d = shape
    q = jax.ShapeDtypeStruct((B, T, H, d), dtype)
    kv = jax.ShapeDtypeStruct((B, T, Hkv, d), dtype)

    def fwd(q, k, v):
        return landmark_attention(q, k, v, block_len=P, backend="pallas")

    def fwd_bwd(q, k, v):
        out, vjp = jax.vjp(fwd, q, k, v)
        return vjp(out)

    harness.assert_triton_kernels(harness.cuda_lowering(fwd, q, kv, kv), ["landmark_fwd"])
    harness.assert_triton_kernels(
        harness.cuda_lowering(fwd_bwd, q, kv, kv),
        ["landmark_fwd", "landmark_bwd_dq", "landmark_bwd_dkv"],
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k_shape=(1, 32, 3, 16)), "multiple of kv heads"),
        (dict(k_shape=(1, 16, 2, 16)), "share"),
        (dict(block_len=12), "dividing"),
        (dict(block_len=1), "dividing"),
        (dict(backend="cuda"), "unknown backend"),
        (dict(k_dtype=jnp.bfloat16), "dtype"),
        (dict(block_len=8, backend="interpret"), "power of two"),
        (dict(q_dtype=jnp.float16, k_dtype=jnp.float16, backend="interpret"), "dtype"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    q = jnp.zeros((1, 32, 4, 16), kwargs.get("q_dtype", jnp.float32))
    k = jnp.zeros(kwargs.get("k_shape", (1, 32, 2, 16)), kwargs.get("k_dtype", jnp.float32))
    with pytest.raises(UnsupportedInputError, match=match):
        landmark_attention(
            q, k, k, block_len=kwargs.get("block_len", 16), backend=kwargs.get("backend", "xla")
        )


def test_auto_runs_xla_where_pallas_cannot():
    q = jnp.zeros((1, 24, 2, 8), jnp.float32)
    assert landmark_attention(q, q, q, block_len=8, backend="auto").shape == q.shape


def test_tiles_beyond_shared_memory_are_refused_by_pallas():
    """P = 128 with d = 128 does not fit an H200's shared memory (measured): no Pallas there."""
    q = jnp.zeros((1, 256, 1, 128), jnp.float32)
    with pytest.raises(UnsupportedInputError, match="shared memory"):
        landmark_attention(q, q, q, block_len=128, backend="interpret")
