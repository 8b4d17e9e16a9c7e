"""Tests for kernels.swa: reference vs dense attention, Pallas (interpret) vs reference, CUDA
lowering on CPU, shard_map, decode against full attention, input validation, and a GPU check."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from jax.sharding import AbstractDevice, AbstractMesh, AxisType, use_abstract_mesh
from jax.sharding import PartitionSpec as P

from kernels._backend import UnsupportedInputError
from kernels.swa import sliding_window_attention, sliding_window_decode
from kernels.swa.pallas_triton import BlockConfig, sliding_window_attention_pallas
from kernels.swa.reference import sliding_window_attention_reference
from tests.kernels.tolerances import assert_close

# Small tile configs so that short test sequences span many blocks, with partial bands, masked
# edges and T off the block grid.
CONFIGS = {
    "all16": BlockConfig(
        block_q=16,
        block_k=16,
        block_q_dq=16,
        block_k_dq=16,
        block_q_dkv=16,
        block_k_dkv=16,
    ),
    "mixed": BlockConfig(
        block_q=32,
        block_k=16,
        block_q_dq=16,
        block_k_dq=32,
        block_q_dkv=32,
        block_k_dkv=16,
    ),
}
HEADS = [(2, 2), (4, 2), (3, 1)]  # (H, Hkv): MHA, GQA, MQA with a non-power-of-two group.
# Kernel examples cost seconds each in the interpreter: a few fresh draws, and no shrinking (a
# failure is reported with the first failing example as drawn).
KERNEL_SETTINGS = settings(
    max_examples=6, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
)


def alibi(H):
    return 2.0 ** (-8.0 * (jnp.arange(H, dtype=jnp.float32) + 1) / H)


def make_inputs(seed, B, T, H, Hkv, d, dtype):
    kq, kk, kv, kc = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (B, T, H, d), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (B, T, Hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (B, T, Hkv, d), jnp.float32).astype(dtype)
    ct = jax.random.normal(kc, (B, T, H, d), jnp.float32).astype(dtype)
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


def fwd_and_vjp(fn, q, k, v, ct):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out,) + vjp(ct.astype(out.dtype))


def assert_all_close(got, want, dtype):
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(g, w, dtype=dtype, kind="out" if name == "out" else "grad", name=name)


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
    got = jax.jit(functools.partial(fwd_and_vjp, ref))(q, k, v, ct)
    want = jax.jit(functools.partial(fwd_and_vjp, dense))(q, k, v, ct)
    assert_all_close(got, want, jnp.float32)


def check_interpret(T, heads, d, window, config, dtype, seed):
    """Pallas kernels (interpreter) vs the blocked reference and, for short T, dense attention."""
    H, Hkv = heads
    q, k, v, ct = make_inputs(seed, 2, T, H, Hkv, d, dtype)
    sl = alibi(H)
    kernel = functools.partial(
        sliding_window_attention_pallas,
        window=window,
        alibi_slopes=sl,
        config=CONFIGS[config],
        interpret=True,
    )
    got = jax.jit(functools.partial(fwd_and_vjp, kernel))(q, k, v, ct)
    assert all(g.dtype == dtype for g in got)
    # Both oracles see the same (rounded) inputs, in f32.
    f32 = [x.astype(jnp.float32) for x in (q, k, v, ct)]
    ref = functools.partial(sliding_window_attention_reference, window=window, alibi_slopes=sl)
    want_ref = jax.jit(functools.partial(fwd_and_vjp, ref))(*f32)
    assert_all_close(got, want_ref, dtype)
    if T <= 50:
        dense = functools.partial(dense_attention, window=window, alibi_slopes=sl)
        want_dense = jax.jit(functools.partial(fwd_and_vjp, dense))(*f32)
        assert_all_close(got, want_dense, dtype)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("window", [-1, 0, 7, 33])
def test_interpret_band_edges(window, config):
    # Every window against both tile configs at T = 97 (off the block grid): left-edge, interior
    # and diagonal tiles all occur, in the forward, the dq and the dkv loops.
    check_interpret(97, (4, 2), 16, window, config, jnp.float32, seed=window + 2)


@KERNEL_SETTINGS
@given(
    T=st.sampled_from([23, 50, 97]),
    heads=st.sampled_from(HEADS),
    d=st.sampled_from([16, 24]),
    window=st.sampled_from([-1, 0, 7, 33]),
    config=st.sampled_from(sorted(CONFIGS)),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_interpret_matches_reference_and_dense(T, heads, d, window, config, dtype, seed):
    check_interpret(T, heads, d, window, config, dtype, seed)


@pytest.mark.parametrize("backend", ["xla", "interpret"])
def test_public_op_default_config_and_scale(backend):
    # Default block config (clamped to the short T) and an explicit scale, through the public op.
    q, k, v, ct = make_inputs(7, 1, 45, 4, 2, 32, jnp.float32)
    sl = alibi(4)
    op = functools.partial(
        sliding_window_attention, window=12, alibi_slopes=sl, scale=0.3, backend=backend
    )
    dense = functools.partial(dense_attention, window=12, alibi_slopes=sl, scale=0.3)
    got = jax.jit(functools.partial(fwd_and_vjp, op))(q, k, v, ct)
    want = jax.jit(functools.partial(fwd_and_vjp, dense))(q, k, v, ct)
    assert_all_close(got, want, jnp.float32)


def test_remat_and_vmap():
    q, k, v, ct = make_inputs(13, 2, 20, 2, 1, 16, jnp.float32)
    sl = alibi(2)
    op = functools.partial(
        sliding_window_attention_pallas,
        window=6,
        alibi_slopes=sl,
        config=CONFIGS["all16"],
        interpret=True,
    )

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * ct)

    grads = jax.jit(jax.grad(functools.partial(loss, op), argnums=(0, 1, 2)))(q, k, v)
    remat = jax.jit(jax.grad(functools.partial(loss, jax.checkpoint(op)), argnums=(0, 1, 2)))
    for name, g, w in zip(("dq", "dk", "dv"), remat(q, k, v), grads):
        assert_close(g, w, dtype=jnp.float32, kind="grad", name=f"remat {name}")
    # vmap over the batch axis (kept as a size-1 batch inside) equals the batched call.
    per_row = jax.vmap(lambda q, k, v: op(q[None], k[None], v[None])[0])(q, k, v)
    assert_close(per_row, op(q, k, v), dtype=jnp.float32, kind="out", name="vmap")


def test_no_alibi_equals_zero_slopes():
    q, k, v, _ = make_inputs(3, 1, 30, 2, 2, 16, jnp.float32)
    a = sliding_window_attention(q, k, v, window=8, alibi_slopes=None, backend="interpret")
    b = sliding_window_attention(
        q, k, v, window=8, alibi_slopes=jnp.zeros((2,), jnp.float32), backend="xla"
    )
    assert_close(a, b, dtype=jnp.float32, kind="out")


def _abstract_cuda_mesh():
    return AbstractMesh(
        (),
        (),
        (),
        abstract_device=AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="cuda"),
    )


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

    for fn, names in ((fwd, ["swa_fwd"]), (fwd_bwd, ["swa_fwd", "swa_bwd_dq", "swa_bwd_dkv"])):
        with use_abstract_mesh(_abstract_cuda_mesh()):
            text = jax.jit(fn).trace(q, kv, kv, sl).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count("xla.gpu.triton") == len(names), fn.__name__
        for name in names:
            assert name in text, (fn.__name__, name)


def test_shard_map_grad_equals_unsharded():
    devices = np.array(jax.devices()[:8]).reshape(2, 4)
    mesh = jax.sharding.Mesh(devices, ("data", "heads"), axis_types=(AxisType.Auto,) * 2)
    B, T, H, Hkv, d, window = 2, 40, 8, 4, 16, 9
    q, k, v, ct = make_inputs(11, B, T, H, Hkv, d, jnp.float32)
    sl = alibi(H)
    config = CONFIGS["all16"]

    def attn(q, k, v, sl):
        return sliding_window_attention_pallas(
            q, k, v, window=window, alibi_slopes=sl, config=config, interpret=True
        )

    spec = P("data", None, "heads", None)
    sharded = jax.shard_map(
        attn, mesh=mesh, in_specs=(spec, spec, spec, P("heads")), out_specs=spec, check_vma=False
    )

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, sl) * ct)

    got = jax.jit(jax.value_and_grad(functools.partial(loss, sharded), argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.value_and_grad(functools.partial(loss, attn), argnums=(0, 1, 2)))(q, k, v)
    assert_close(got[0], want[0], dtype=jnp.float32, kind="out", name="loss")
    for name, g, w in zip(("dq", "dk", "dv"), got[1], want[1]):
        assert_close(g, w, dtype=jnp.float32, kind="grad", name=name)


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
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
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


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("window", [512, -1])
def test_pallas_on_gpu_matches_reference(dtype, window):
    B, T, H, Hkv, d = 2, 1500, 8, 4, 64
    q, k, v, ct = make_inputs(17, B, T, H, Hkv, d, dtype)
    sl = alibi(H)
    op = functools.partial(sliding_window_attention, window=window, alibi_slopes=sl)
    got = jax.jit(functools.partial(fwd_and_vjp, functools.partial(op, backend="pallas")))(
        q, k, v, ct
    )
    f32 = [x.astype(jnp.float32) for x in (q, k, v, ct)]
    with jax.default_matmul_precision("highest"):
        want = jax.jit(functools.partial(fwd_and_vjp, functools.partial(op, backend="xla")))(*f32)
    assert_all_close(got, want, dtype)
