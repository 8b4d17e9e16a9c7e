"""SWA kernels: reference vs dense attention, Pallas (interpret on CPU, pallas on GPU) vs the
reference, CUDA lowering on CPU, shard_map, decode against full attention, input validation."""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from kernels._backend import UnsupportedInputError
from kernels.swa import sliding_window_attention, sliding_window_decode
from kernels.swa._common import SwaBlockConfig
from kernels.swa.pallas_triton import sliding_window_attention_pallas
from kernels.swa.reference import sliding_window_attention_reference
from tests.kernels import harness
from tests.kernels.tolerances import assert_close


class Spec(typing.NamedTuple):
    """Sizes of one test case: q (B, T, H, d), k/v (B, T, Hkv, d), window W."""

    B: int
    T: int
    H: int
    Hkv: int
    d: int
    W: int


# Named shapes through the public op (default block config), T off the block grid. With the
# default 64-row tiles, T = 300 spans 5 query blocks: W = 33 gives masked band edges, W = 200
# also an unmasked middle.
SPECS = {
    "gqa_t300_w33": Spec(B=1, T=300, H=4, Hkv=2, d=16, W=33),
    "mqa3_t300_w200_d24": Spec(B=1, T=300, H=3, Hkv=1, d=24, W=200),  # Group of 3; d padded.
    "mha_t23_full": Spec(B=2, T=23, H=2, Hkv=2, d=16, W=-1),
    "gqa_t40_w0": Spec(B=1, T=40, H=4, Hkv=2, d=16, W=0),
    "gpu_t1500_w512": Spec(B=2, T=1500, H=8, Hkv=4, d=64, W=512),
    "gpu_t1500_full": Spec(B=2, T=1500, H=8, Hkv=4, d=64, W=-1),
}
GPU_ONLY = ("gpu_t1500_w512", "gpu_t1500_full")
GRADS = ("dq", "dk", "dv")
# Small tile configs so that short sequences span many blocks, with partial bands, masked edges
# and T off the block grid.
CONFIGS = {
    "all16": SwaBlockConfig(
        block_q=16, block_k=16, block_q_dq=16, block_k_dq=16, block_q_dkv=16, block_k_dkv=16
    ),
    "mixed": SwaBlockConfig(
        block_q=32, block_k=16, block_q_dq=16, block_k_dq=32, block_q_dkv=32, block_k_dkv=16
    ),
}
HEADS = [(2, 2), (4, 2), (3, 1)]  # (H, Hkv): MHA, GQA, MQA with a non-power-of-two group.


def alibi(H):
    return 2.0 ** (-8.0 * (jnp.arange(H, dtype=jnp.float32) + 1) / H)


def make_inputs(seed, B, T, H, Hkv, d, dtype):
    """Random q, k, v and the output's cotangent."""
    rng = np.random.default_rng(seed)
    q = harness.normal(rng, (B, T, H, d), dtype)
    k = harness.normal(rng, (B, T, Hkv, d), dtype)
    v = harness.normal(rng, (B, T, Hkv, d), dtype)
    ct = harness.normal(rng, (B, T, H, d), dtype)
    return q, k, v, ct


def dense_attention(q_BxTxHxd, k_BxTxKxd, v_BxTxKxd, *, window, alibi_slopes, scale=None):
    """Unblocked masked attention with a full (T, T) bias: the textbook formula, f32."""
    B, T, H, d = q_BxTxHxd.shape
    G = H // k_BxTxKxd.shape[2]
    scale = d**-0.5 if scale is None else scale
    k_BxTxHxd = jnp.repeat(k_BxTxKxd, G, axis=2).astype(jnp.float32)
    v_BxTxHxd = jnp.repeat(v_BxTxKxd, G, axis=2).astype(jnp.float32)
    s_BxHxTxT = jnp.einsum("bqhd,bkhd->bhqk", q_BxTxHxd.astype(jnp.float32), k_BxTxHxd) * scale
    diff_TxT = jnp.arange(T)[:, None] - jnp.arange(T)[None, :]
    s_BxHxTxT = s_BxHxTxT - alibi_slopes[None, :, None, None] * diff_TxT[None, None]
    visible_TxT = (diff_TxT >= 0) & ((diff_TxT <= window) | (window < 0))
    s_BxHxTxT = jnp.where(visible_TxT[None, None], s_BxHxTxT, -jnp.inf)
    p_BxHxTxT = jax.nn.softmax(s_BxHxTxT, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", p_BxHxTxT, v_BxTxHxd)


@functools.cache  # One function per setting: harness.fwd_and_vjp caches compilations by it.
def attend(backend, *, window, scale=None):
    """sliding_window_attention as a function of q, k, v, then the slopes (not differentiated)."""
    return lambda q, k, v, slopes: sliding_window_attention(
        q, k, v, window=window, alibi_slopes=slopes, scale=scale, backend=backend
    )


def dense(*, window, scale=None):
    """dense_attention as a function of q, k, v, then the slopes."""
    return lambda q, k, v, slopes: dense_attention(
        q, k, v, window=window, alibi_slopes=slopes, scale=scale
    )


def assert_all_close(got, want, dtype):
    (out, grads), (ref_out, ref_grads) = got, want
    assert_close(out, ref_out, dtype=dtype, kind="out", name="out")
    for name, g, w in zip(GRADS, grads, ref_grads, strict=True):
        assert_close(g, w, dtype=dtype, kind="grad", name=name)


@settings(max_examples=6)
@given(
    B=st.sampled_from([1, 2]),
    T=st.sampled_from([1, 9, 40, 77]),
    heads=st.sampled_from(HEADS),
    d=st.sampled_from([8, 16]),
    window=st.sampled_from([-1, 0, 5, 24]),
    block_q=st.sampled_from([8, 16, 128]),
    seed=st.integers(0, 2**16),
)
def test_reference_matches_dense(B, T, heads, d, window, block_q, seed):
    H, Hkv = heads
    q, k, v, ct = make_inputs(seed, B, T, H, Hkv, d, jnp.float32)
    sl = alibi(H)
    ref = functools.partial(
        sliding_window_attention_reference, window=window, alibi_slopes=sl, block_q=block_q
    )
    dense = functools.partial(dense_attention, window=window, alibi_slopes=sl)
    got = harness.fwd_and_vjp(ref, (q, k, v), ct)
    want = harness.fwd_and_vjp(dense, (q, k, v), ct)
    assert_all_close(got, want, jnp.float32)


@pytest.mark.parametrize("backend,shape,dtype", harness.kernel_cases(SPECS, gpu_only=GPU_ONLY))
def test_forward_and_vjp_match_reference(backend, shape, dtype):
    spec = SPECS[shape]
    q, k, v, ct = make_inputs(
        list(SPECS).index(shape), spec.B, spec.T, spec.H, spec.Hkv, spec.d, dtype
    )
    slopes = (alibi(spec.H),)
    got, _ = harness.check_against_reference(
        attend(backend, window=spec.W),
        attend("xla", window=spec.W),
        (q, k, v),
        ct,
        consts=slopes,
        dtype=dtype,
        names=GRADS,
    )
    if spec.T <= 50:  # Short enough for the textbook formula as a second oracle.
        f32 = harness.to_float32((q, k, v))
        assert_all_close(got, harness.fwd_and_vjp(dense(window=spec.W), f32, ct, slopes), dtype)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("window", [-1, 0, 7, 33])
def test_interpret_band_edges(window, config):
    # Every window against both tile configs at T = 97 (off the block grid): left-edge, interior
    # and diagonal tiles all occur, in the forward, the dq and the dkv loops.
    q, k, v, ct = make_inputs(window + 2, 2, 97, 4, 2, 16, jnp.float32)
    harness.check_against_reference(
        lambda q, k, v, sl: sliding_window_attention_pallas(
            q, k, v, window=window, alibi_slopes=sl, config=CONFIGS[config], interpret=True
        ),
        attend("xla", window=window),
        (q, k, v),
        ct,
        consts=(alibi(4),),
        dtype=jnp.float32,
        names=GRADS,
    )


def test_block_config_defaults_and_validation():
    assert SwaBlockConfig.default(16640, 64, 512) == SwaBlockConfig()
    wide = SwaBlockConfig.default(16640, 64, -1)
    assert (wide.block_q, wide.block_k_dkv) == (128, 128)
    assert SwaBlockConfig.default(16640, 128, 512).num_warps == 8
    assert SwaBlockConfig.default(20, 64, 512).max_block == 32  # Clamped to the short T.
    with pytest.raises(ValueError, match="power of 2"):
        SwaBlockConfig(block_k=24)


@pytest.mark.parametrize("backend", ["xla", "interpret"])
def test_public_op_default_config_and_scale(backend):
    # Default block config (clamped to the short T) and an explicit scale, through the public op.
    q, k, v, ct = make_inputs(7, 1, 45, 4, 2, 32, jnp.float32)
    slopes = (alibi(4),)
    got = harness.fwd_and_vjp(attend(backend, window=12, scale=0.3), (q, k, v), ct, slopes)
    want = harness.fwd_and_vjp(dense(window=12, scale=0.3), (q, k, v), ct, slopes)
    assert_all_close(got, want, jnp.float32)


@pytest.mark.parametrize("backend", harness.backends())
def test_vmap_and_remat_match_reference(backend):
    q, k, v, ct = make_inputs(13, 2, 20, 2, 1, 16, jnp.float32)  # vmapped over the batch axis.
    sl = alibi(2)

    def op(backend):
        per_row = attend(backend, window=6)
        return lambda q, k, v: per_row(q[None], k[None], v[None], sl)[0]

    harness.check_vmap_and_remat(op, (q, k, v), ct, backend=backend, names=GRADS)


def test_no_alibi_equals_zero_slopes():
    q, k, v, _ = make_inputs(3, 1, 30, 2, 2, 16, jnp.float32)
    a = sliding_window_attention(q, k, v, window=8, alibi_slopes=None, backend="interpret")
    b = sliding_window_attention(
        q, k, v, window=8, alibi_slopes=jnp.zeros((2,), jnp.float32), backend="xla"
    )
    assert_close(a, b, dtype=jnp.float32, kind="out")


@pytest.mark.parametrize(
    "shape,window,dtype",
    [
        ((2, 300, 4, 2, 48), 64, jnp.bfloat16),  # GQA, T and d off the power-of-two grid.
        ((1, 1024, 12, 12, 64), 512, jnp.bfloat16),  # The DRT layer.
        ((1, 256, 3, 1, 64), -1, jnp.float32),  # Full causal, group of 3, f32.
        ((1, 512, 4, 4, 128), 256, jnp.bfloat16),  # Wider heads (8 warps).
    ],
)
def test_cuda_lowering_on_cpu(shape, window, dtype):
    B, T, H, Hkv, d = shape
    q = jax.ShapeDtypeStruct((B, T, H, d), dtype)
    kv = jax.ShapeDtypeStruct((B, T, Hkv, d), dtype)
    sl = jax.ShapeDtypeStruct((H,), jnp.float32)

    def fwd(q, k, v, sl):
        return sliding_window_attention(q, k, v, window=window, alibi_slopes=sl, backend="pallas")

    def fwd_bwd(q, k, v, sl):
        out, vjp = jax.vjp(lambda q, k, v: fwd(q, k, v, sl), q, k, v)
        return vjp(out)

    harness.assert_triton_kernels(harness.cuda_lowering(fwd, q, kv, kv, sl), ["swa_fwd"])
    harness.assert_triton_kernels(
        harness.cuda_lowering(fwd_bwd, q, kv, kv, sl), ["swa_fwd", "swa_bwd_dq", "swa_bwd_dkv"]
    )


def test_shard_map_grad_equals_unsharded():
    """Batch over "data", heads over "heads": each device runs the kernels on its local heads."""
    mesh = jax.make_mesh((2, 4), ("data", "heads"), axis_types=(AxisType.Auto,) * 2)
    q, k, v, ct = make_inputs(11, 2, 40, 8, 4, 16, jnp.float32)
    spec = P("data", None, "heads", None)
    harness.check_shard_map_grad(
        lambda q, k, v, sl: sliding_window_attention_pallas(
            q, k, v, window=9, alibi_slopes=sl, config=CONFIGS["all16"], interpret=True
        ),
        (q, k, v, alibi(8)),
        ct,
        mesh=mesh,
        in_specs=(spec, spec, spec, P("heads")),
        out_specs=spec,
        names=GRADS,
    )


@settings(max_examples=5)
@given(
    window=st.sampled_from([0, 3, 16]),
    heads=st.sampled_from(HEADS),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_decode_equals_last_row_of_full_attention(window, heads, dtype, seed):
    H, Hkv = heads
    B, d, T = 3, 16, 40
    N = window + 1
    q, k, v, _ = make_inputs(seed, B, T, H, Hkv, d, dtype)
    rng = np.random.default_rng(seed)
    # Batch element b decodes position p_b: partially filled (p < window), just full, and wrapped.
    q_pos = np.array([min(window // 2, T - 1), window, T - 1], np.int32)
    k_pos = np.full((B, N), -1, np.int32)
    k_cache = rng.standard_normal((B, N, Hkv, d)).astype(np.float32)  # Garbage in empty slots.
    v_cache = rng.standard_normal((B, N, Hkv, d)).astype(np.float32)
    for b, p in enumerate(q_pos):
        positions = np.arange(max(0, p - window), p + 1)
        slots = rng.permutation(N)[: len(positions)]
        k_pos[b, slots] = positions
        k_cache[b, slots] = np.asarray(k[b, positions], np.float32)
        v_cache[b, slots] = np.asarray(v[b, positions], np.float32)
    sl = alibi(H)
    out = sliding_window_decode(
        q[jnp.arange(B), q_pos],
        jnp.asarray(k_cache, dtype),
        jnp.asarray(v_cache, dtype),
        jnp.asarray(k_pos),
        jnp.asarray(q_pos),
        window=window,
        alibi_slopes=sl,
    )
    assert out.shape == (B, H, d) and out.dtype == dtype
    f32 = harness.to_float32((q, k, v))
    full = dense_attention(*f32, window=window, alibi_slopes=sl)
    assert_close(out, full[jnp.arange(B), q_pos], dtype=dtype, kind="out", name="decode")


def test_decode_ignores_keys_outside_window_and_empty_batches():
    B, H, d, N = 2, 2, 8, 4
    q, k, v, _ = make_inputs(5, B, N, H, H, d, jnp.float32)
    key_pos = jnp.array([[10, 6, 9, 8], [-1, -1, -1, -1]], jnp.int32)  # 6 is stale for q_pos=10.
    q_pos = jnp.array([10, 3], jnp.int32)
    out = sliding_window_decode(q[:, 0], k, v, key_pos, q_pos, window=2, alibi_slopes=alibi(H))
    keep = jnp.array([[True, False, True, True]] * 2)
    ref = sliding_window_decode(
        q[:, 0],
        k,
        v,
        jnp.where(keep, key_pos, -1),
        q_pos,
        window=1000,
        alibi_slopes=alibi(H),
    )
    assert_close(out[0], ref[0], dtype=jnp.float32, kind="out")
    np.testing.assert_array_equal(np.asarray(out[1]), 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k_shape=(1, 8, 3, 16)), "multiple of kv heads"),
        (dict(k_shape=(1, 9, 2, 16)), "share"),
        (dict(window=-2), "window"),
        (dict(slopes_shape=(3,)), "alibi_slopes"),
        (dict(backend="cuda"), "unknown backend"),
        (dict(k_dtype=jnp.bfloat16), "dtype"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    q = jnp.zeros((1, 8, 4, 16), jnp.float32)
    k = jnp.zeros(kwargs.get("k_shape", (1, 8, 2, 16)), kwargs.get("k_dtype", jnp.float32))
    slopes = jnp.zeros(kwargs.get("slopes_shape", (4,)), jnp.float32)
    with pytest.raises(UnsupportedInputError, match=match):
        sliding_window_attention(
            q,
            k,
            k,
            window=kwargs.get("window", 4),
            alibi_slopes=slopes,
            backend=kwargs.get("backend", "xla"),
        )


def test_decode_invalid_inputs_raise():
    q = jnp.zeros((2, 4, 16), jnp.float32)
    k = jnp.zeros((2, 5, 2, 16), jnp.float32)
    pos = jnp.zeros((2, 5), jnp.int32)
    with pytest.raises(UnsupportedInputError, match="multiple of kv heads"):
        sliding_window_decode(
            q,
            k[:, :, :1].repeat(3, 2),
            k[:, :, :1].repeat(3, 2),
            pos,
            pos[:, 0],
            window=4,
            alibi_slopes=None,
        )
    with pytest.raises(UnsupportedInputError, match="key_pos"):
        sliding_window_decode(q, k, k, pos[:, :4], pos[:, 0], window=4, alibi_slopes=None)
    with pytest.raises(UnsupportedInputError, match="integers"):
        sliding_window_decode(
            q, k, k, pos.astype(jnp.float32), pos[:, 0], window=4, alibi_slopes=None
        )


@pytest.mark.parametrize(
    "shape,dtype,match",
    [((1, 8, 2, 320), jnp.float32, "head dim"), ((1, 8, 2, 16), jnp.float16, "dtype")],
)
def test_pallas_rejects_unsupported_inputs(shape, dtype, match):
    q = jnp.zeros(shape, dtype)
    with pytest.raises(UnsupportedInputError, match=match):
        sliding_window_attention(q, q, q, window=4, alibi_slopes=None, backend="interpret")
    # "auto" never fails on such inputs: it runs XLA.
    out = sliding_window_attention(q, q, q, window=4, alibi_slopes=None, backend="auto")
    assert out.shape == q.shape
