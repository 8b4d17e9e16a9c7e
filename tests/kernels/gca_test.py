"""GCA kernels: Pallas (interpret on CPU, pallas on GPU) vs the pure-jnp reference, lowering,
sharding, determinism and the public op's contract."""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from kernels._backend import UnsupportedInputError
from kernels.gca import gca_attention, gca_decode, pallas_triton_vjp
from kernels.gca._common import GcaBlockConfig, RowTiles, row_tiles
from kernels.gca.pallas_triton import gca_attention_pallas
from tests.kernels import harness
from tests.kernels.tolerances import assert_close


class Spec(typing.NamedTuple):
    """Sizes of one test case: q (B, C, P, H, d), memory (B, E, S, Hkv, d), idx (B, C, K)."""

    B: int
    C: int
    P: int
    H: int
    Hkv: int
    d: int
    E: int
    S: int
    K: int


# Named shapes, small so interpret mode stays fast; each covers a contract corner.
SPECS = {
    "k1_c1": Spec(B=1, C=1, P=16, H=2, Hkv=2, d=16, E=3, S=16, K=1),
    "k3_gqa_p65": Spec(B=2, C=3, P=65, H=4, Hkv=2, d=16, E=5, S=64, K=3),
    "k8_dups": Spec(B=1, C=2, P=64, H=2, Hkv=1, d=32, E=4, S=64, K=8),  # E < K: duplicates.
    "p7_e1": Spec(B=2, C=2, P=7, H=2, Hkv=2, d=16, E=1, S=32, K=2),
    "gpu_p65_k8": Spec(B=2, C=8, P=65, H=4, Hkv=2, d=64, E=8, S=64, K=8),
}
GPU_ONLY = ("gpu_p65_k8",)
GRADS = ("dq", "dkeys", "dvalues", "dw")


def make_inputs(spec: Spec, dtype, seed: int, zero_fraction: float = 0.3):
    """Random q/keys/values/idx/w/dout; about zero_fraction of the weights are padding (0)."""
    rng = np.random.default_rng(seed)
    q = harness.normal(rng, (spec.B, spec.C, spec.P, spec.H, spec.d), dtype)
    keys = harness.normal(rng, (spec.B, spec.E, spec.S, spec.Hkv, spec.d), dtype)
    values = harness.normal(rng, (spec.B, spec.E, spec.S, spec.Hkv, spec.d), dtype)
    idx = jnp.asarray(rng.integers(0, spec.E, (spec.B, spec.C, spec.K), dtype=np.int32))
    w = rng.uniform(0.1, 1.0, (spec.B, spec.C, spec.K)).astype(np.float32)
    w = jnp.asarray(np.where(rng.uniform(size=w.shape) < zero_fraction, 0.0, w))
    dout = harness.normal(rng, q.shape, dtype)
    return q, keys, values, idx, w, dout


@functools.cache  # One function per setting: harness.fwd_and_vjp caches compilations by it.
def attend(*, scale, backend, use_tf32_probs=False):
    """gca_attention as a function of (q, keys, values, w), then idx (not differentiated)."""
    return lambda q, keys, values, w, idx: gca_attention(
        q, keys, values, idx, w, scale=scale, backend=backend, use_tf32_probs=use_tf32_probs
    )


def check(spec: Spec, dtype, backend, seed: int, zero_fraction: float = 0.3):
    """Forward and VJP of one backend vs the float32 reference; returns both."""
    q, keys, values, idx, w, dout = make_inputs(spec, dtype, seed, zero_fraction)
    return harness.check_against_reference(
        attend(scale=spec.d**-0.5, backend=backend),
        attend(scale=spec.d**-0.5, backend="xla"),
        (q, keys, values, w),
        dout,
        consts=(idx,),
        dtype=dtype,
        names=GRADS,
    )


@pytest.mark.parametrize("backend,shape,dtype", harness.kernel_cases(SPECS, gpu_only=GPU_ONLY))
def test_forward_and_vjp_match_reference(backend, shape, dtype):
    check(SPECS[shape], dtype, backend, seed=list(SPECS).index(shape))


@pytest.mark.parametrize(
    "rows,block,expected",
    [
        (64, 64, RowTiles(64, 1, 0)),
        (65, 64, RowTiles(64, 1, 16)),
        (65, 32, RowTiles(32, 2, 16)),
        (7, 16, RowTiles(16, 1, 0)),
        (100, 64, RowTiles(64, 2, 0)),
        (1, 64, RowTiles(64, 0, 16)),
    ],
)
def test_row_tiles(rows, block, expected):
    tiles = row_tiles(rows, block)
    assert tiles == expected
    assert tiles.padded >= rows


@pytest.mark.parametrize("rows,block_q,block_q_dkv", [(65, 32, 16), (80, 64, 32)])
def test_row_tilings_match_reference(rows, block_q, block_q_dkv):
    spec = Spec(B=1, C=2, P=rows, H=2, Hkv=1, d=16, E=3, S=16, K=2)
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=rows)
    config = GcaBlockConfig(block_q=block_q, block_q_dkv=block_q_dkv, block_s_dkv=16)
    harness.check_against_reference(
        lambda q, k, v, w, idx: gca_attention_pallas(
            q, k, v, idx, w, scale=0.25, interpret=True, config=config
        ),
        attend(scale=0.25, backend="xla"),
        (q, keys, values, w),
        dout,
        consts=(idx,),
        dtype=jnp.float32,
        names=GRADS,
    )


def test_block_config_rejects_bad_tiles():
    with pytest.raises(ValueError, match="power of 2"):
        GcaBlockConfig(block_q=48)
    with pytest.raises(ValueError, match="block_q_dkv"):
        GcaBlockConfig(block_q=32, block_q_dkv=64)
    with pytest.raises(ValueError, match="divide"):
        GcaBlockConfig(block_s_dkv=64).validate(slots=32)


def test_p65_gradient_of_row_64():
    """The original kernel never writes dq of query row 64 when P = 65 (docs/spec.md §2.5)."""
    (_, grads), (_, ref_grads) = check(
        SPECS["k3_gqa_p65"], jnp.float32, "interpret", seed=3, zero_fraction=0.0
    )
    dq_row64, ref_row64 = grads[0][:, :, 64], ref_grads[0][:, :, 64]
    assert float(jnp.max(jnp.abs(ref_row64))) > 1e-3  # The row really has a gradient.
    assert_close(dq_row64, ref_row64, dtype=jnp.float32, kind="grad", name="dq row 64")


def test_tf32_probs_is_at_least_as_accurate():
    """use_tf32_probs keeps P and dS in float32 (interpret mode multiplies them exactly)."""
    q, keys, values, idx, w, dout = make_inputs(SPECS["k3_gqa_p65"], jnp.bfloat16, seed=21)
    primals = (q, keys, values, w)
    tf32 = attend(scale=0.25, backend="interpret", use_tf32_probs=True)
    got = harness.fwd_and_vjp(tf32, primals, dout, consts=(idx,))
    reference = attend(scale=0.25, backend="xla")
    want = harness.fwd_and_vjp(reference, harness.to_float32(primals), dout, consts=(idx,))
    # Only the final rounding to bfloat16 remains: at most half an ulp, 2**-8 relative.
    for name, x, y in zip(("out",) + GRADS, jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(x, y, dtype=jnp.bfloat16, kind="rounding", name=name)
    # The reference keeps probabilities in float32 anyway: the flag changes nothing there.
    xla_tf32 = attend(scale=0.25, backend="xla", use_tf32_probs=True)
    assert str(jax.make_jaxpr(xla_tf32)(*primals, idx)) == str(
        jax.make_jaxpr(reference)(*primals, idx)
    )


@pytest.mark.parametrize("use_fallback", [False, True])
def test_inverse_index(use_fallback, monkeypatch):
    if use_fallback:
        monkeypatch.setattr(pallas_triton_vjp, "_MAX_COMBINED_KEY", 0)
    b, c, k, e = 3, 7, 4, 5
    rng = np.random.default_rng(int(use_fallback))
    idx = jnp.asarray(rng.integers(0, e, (b, c, k), dtype=np.int32))
    w = jnp.asarray(np.where(rng.uniform(size=(b, c, k)) < 0.3, 0.0, 0.5), jnp.float32)
    order, start, end = map(np.asarray, pallas_triton_vjp.inverse_index(idx, w, e))
    pairs_idx = np.asarray(idx).reshape(b, c * k)
    pairs_w = np.asarray(w).reshape(b, c * k)
    for bb in range(b):
        for row in range(e):
            expected = [n for n in range(c * k) if pairs_idx[bb, n] == row and pairs_w[bb, n]]
            # Ascending pair order within a row: the fixed accumulation order of dK/dV.
            assert order[bb, start[bb, row] : end[bb, row]].tolist() == expected


@pytest.mark.parametrize("backend", harness.backends())
def test_all_padding_gives_zero_and_finite_grads(backend):
    q, keys, values, idx, w, dout = make_inputs(SPECS["k3_gqa_p65"], jnp.float32, seed=5)
    w = jnp.zeros_like(w)
    primals = (q, keys, values, w)
    out, (dq, dk, dv, dw) = harness.fwd_and_vjp(
        attend(scale=0.25, backend=backend), primals, dout, consts=(idx,)
    )
    np.testing.assert_array_equal(out, 0.0)
    for g in (dq, dk, dv):
        np.testing.assert_array_equal(g, 0.0)
    _, ref_grads = harness.fwd_and_vjp(
        attend(scale=0.25, backend="xla"), primals, dout, consts=(idx,)
    )
    # dw of padding slots is not zero.
    assert_close(dw, ref_grads[3], dtype=jnp.float32, kind="grad", name="dw")


@pytest.mark.parametrize("backend", harness.backends())
def test_padding_slot_index_does_not_matter(backend):
    spec = SPECS["k8_dups"]
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=7)
    w = w.at[:, :, ::2].set(0.0)
    other_idx = jnp.where(w == 0, (idx + 1) % spec.E, idx)
    fn, primals = attend(scale=spec.d**-0.5, backend=backend), (q, keys, values, w)
    a = harness.fwd_and_vjp(fn, primals, dout, consts=(idx,))
    b = harness.fwd_and_vjp(fn, primals, dout, consts=(other_idx,))
    # out, dq, dkeys and dvalues; dw of a padding slot does depend on the row it points at.
    for x, y in zip(jax.tree.leaves(a)[:4], jax.tree.leaves(b)[:4]):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", harness.backends())
def test_backward_is_deterministic(backend):
    spec = SPECS["k8_dups"]
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.bfloat16, seed=11)
    fn = attend(scale=spec.d**-0.5, backend=backend)
    a = harness.fwd_and_vjp(fn, (q, keys, values, w), dout, consts=(idx,))
    b = harness.fwd_and_vjp(fn, (q, keys, values, w), dout, consts=(idx,))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


@pytest.mark.parametrize("backend", harness.backends())
def test_vmap_and_remat_match_reference(backend):
    stacked = [
        jnp.stack(xs) for xs in zip(*(make_inputs(SPECS["k1_c1"], jnp.float32, s) for s in (1, 2)))
    ]
    q, keys, values, idx, w, dout = stacked  # A leading vmapped axis of 2.
    harness.check_vmap_and_remat(
        lambda backend: attend(scale=0.25, backend=backend),
        (q, keys, values, w, idx),
        dout,
        backend=backend,
        names=GRADS,
    )


def test_shard_map_grad_equals_unsharded():
    """Batch over "data", heads over "tensor": each device runs the kernel on its local heads."""
    spec = Spec(B=2, C=2, P=16, H=8, Hkv=4, d=16, E=3, S=16, K=2)
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=13)
    mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
    heads = P("data", None, None, "tensor", None)
    harness.check_shard_map_grad(
        attend(scale=0.25, backend="interpret"),
        (q, keys, values, w, idx),
        dout,
        mesh=mesh,
        in_specs=(heads, heads, heads, P("data"), P("data")),
        out_specs=heads,
        names=GRADS,
    )


@pytest.mark.parametrize("backend", harness.backends())
@pytest.mark.parametrize(
    "n,hkv,dtype", [(1, 2, jnp.float32), (2, 1, jnp.float32), (65, 2, jnp.bfloat16)]
)
def test_decode_matches_reference(n, hkv, dtype, backend):
    b, h, d, k, s = 2, 4, 16, 3, 64
    rng = np.random.default_rng(n)
    q = harness.normal(rng, (b, n, h, d), dtype)
    keys = harness.normal(rng, (b, k, s, hkv, d), dtype)
    values = harness.normal(rng, (b, k, s, hkv, d), dtype)
    w = jnp.asarray(rng.uniform(size=(b, k)), jnp.float32).at[:, -1].set(0.0)
    out = jax.jit(functools.partial(gca_decode, scale=0.25, backend=backend))(q, keys, values, w)
    f32 = harness.to_float32((q, keys, values))
    ref = gca_decode(*f32, w, scale=0.25, backend="xla")
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref, dtype=dtype, kind="out", name="decode")


def test_decode_equals_attention_on_gathered_chunks():
    q, keys, values, idx, w, _ = make_inputs(SPECS["k3_gqa_p65"], jnp.float32, seed=2)
    full = gca_attention(q, keys, values, idx, w, scale=0.25, backend="xla")
    take = jax.vmap(lambda m, i: m[i])
    c = 2
    out = gca_decode(
        q[:, c],
        take(keys, idx[:, c]),
        take(values, idx[:, c]),
        w[:, c],
        scale=0.25,
        backend="interpret",
    )
    assert_close(out, full[:, c], dtype=jnp.float32, kind="out", name="decode vs attention")


def test_contract_violations_raise():
    q, keys, values, idx, w, _ = make_inputs(SPECS["k1_c1"], jnp.float32, seed=0)
    with pytest.raises(UnsupportedInputError, match="int32"):
        gca_attention(q, keys, values, idx.astype(jnp.float32), w, scale=1.0, backend="xla")
    with pytest.raises(UnsupportedInputError, match="multiple"):
        gca_attention(q[..., :1, :], keys.repeat(2, 3), values.repeat(2, 3), idx, w, scale=1.0)
    with pytest.raises(UnsupportedInputError, match="float dtype"):
        gca_attention(q, keys, values.astype(jnp.bfloat16), idx, w, scale=1.0, backend="xla")
    odd_d = jnp.zeros(q.shape[:-1] + (24,))
    odd_kv = jnp.zeros(keys.shape[:-1] + (24,))
    with pytest.raises(UnsupportedInputError, match="head dim"):
        gca_attention(odd_d, odd_kv, odd_kv, idx, w, scale=1.0, backend="interpret")
    # The reference takes any head dim, and "auto" on CPU picks it.
    assert gca_attention(odd_d, odd_kv, odd_kv, idx, w, scale=1.0).shape == odd_d.shape
    with pytest.raises(UnsupportedInputError, match="positive"):
        gca_attention(q, keys, values, idx, w, scale=-1.0, backend="interpret")
    huge = jax.ShapeDtypeStruct((1, 50_000, 64, 12, 64), jnp.bfloat16)  # > 2**31 elements.
    with pytest.raises(UnsupportedInputError, match="2\\*\\*31"):
        jax.eval_shape(
            lambda q, k, v: gca_attention(q, k, v, idx[:1], w[:1], scale=1.0, backend="pallas"),
            jax.ShapeDtypeStruct((1, 1, 64, 12, 64), jnp.bfloat16),
            huge,
            huge,
        )
    with pytest.raises(UnsupportedInputError, match="w shape"):
        gca_decode(q[:, 0], keys, values, w[:, 0], scale=1.0, backend="xla")


@pytest.mark.parametrize(
    "p,dtype,config,use_tf32_probs",
    [
        (64, jnp.bfloat16, None, False),
        (65, jnp.float32, None, False),
        (65, jnp.bfloat16, GcaBlockConfig(block_s_dkv=32, block_q_dkv=32), True),
    ],
)
def test_cuda_lowering_forward_and_backward(p, dtype, config, use_tf32_probs):
    b, c, h, hkv, d, e, s, k = 2, 4, 4, 2, 64, 6, 64, 3
    sds = jax.ShapeDtypeStruct
    args = (
        sds((b, c, p, h, d), dtype),
        sds((b, e, s, hkv, d), dtype),
        sds((b, e, s, hkv, d), dtype),
        sds((b, c, k), jnp.int32),
        sds((b, c, k), jnp.float32),
    )

    def forward(q, keys, values, idx, w):
        return gca_attention_pallas(
            q,
            keys,
            values,
            idx,
            w,
            scale=0.125,
            interpret=False,
            use_tf32_probs=use_tf32_probs,
            config=config,
        )

    def loss_and_grads(q, keys, values, idx, w):
        loss = lambda q, k, v, w: jnp.sum(forward(q, k, v, idx, w).astype(jnp.float32) ** 2)
        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, keys, values, w)

    harness.assert_triton_kernels(harness.cuda_lowering(forward, *args), ["gca_fwd"])
    harness.assert_triton_kernels(
        harness.cuda_lowering(loss_and_grads, *args), ["gca_fwd", "gca_bwd_dq", "gca_bwd_dkv"]
    )


def test_cuda_lowering_decode():
    sds = jax.ShapeDtypeStruct
    args = (
        sds((3, 1, 4, 64), jnp.bfloat16),
        sds((3, 8, 64, 4, 64), jnp.bfloat16),
        sds((3, 8, 64, 4, 64), jnp.bfloat16),
        sds((3, 8), jnp.float32),
    )
    decode = functools.partial(gca_decode, scale=0.125, backend="pallas")
    harness.assert_triton_kernels(harness.cuda_lowering(decode, *args), ["gca_decode"])
