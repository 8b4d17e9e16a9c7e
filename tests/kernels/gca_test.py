"""GCA kernels: interpret-mode Pallas vs the pure-jnp reference, lowering, sharding, determinism."""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import AbstractDevice, AbstractMesh, AxisType, use_abstract_mesh
from jax.sharding import PartitionSpec as P

from kernels._backend import UnsupportedInputError
from kernels.gca import gca_attention, gca_decode, pallas_triton_vjp, reference
from kernels.gca._common import GcaBlockConfig, RowTiles, row_tiles
from kernels.gca.pallas_triton import gca_attention_pallas
from tests.kernels.tolerances import tolerance


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
}

H200 = AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="cuda")


def make_inputs(spec: Spec, dtype, seed: int, zero_fraction: float = 0.3):
    """Random q/keys/values/idx/w/dout; about zero_fraction of the weights are padding (0)."""
    ks = jax.random.split(jax.random.key(seed), 7)
    q = jax.random.normal(ks[0], (spec.B, spec.C, spec.P, spec.H, spec.d), dtype)
    keys = jax.random.normal(ks[1], (spec.B, spec.E, spec.S, spec.Hkv, spec.d), dtype)
    values = jax.random.normal(ks[2], (spec.B, spec.E, spec.S, spec.Hkv, spec.d), dtype)
    idx = jax.random.randint(ks[3], (spec.B, spec.C, spec.K), 0, spec.E, dtype=jnp.int32)
    w = jax.random.uniform(ks[4], (spec.B, spec.C, spec.K), jnp.float32, 0.1, 1.0)
    w = jnp.where(jax.random.uniform(ks[5], w.shape) < zero_fraction, 0.0, w)
    dout = jax.random.normal(ks[6], q.shape, dtype)
    return q, keys, values, idx, w, dout


@functools.partial(jax.jit, static_argnames=("backend", "scale"))
def fwd_and_vjp(q, keys, values, idx, w, dout, *, backend, scale):
    """Forward output and (dq, dkeys, dvalues, dw) for cotangent dout."""
    out, pullback = jax.vjp(
        lambda q, k, v, w: gca_attention(q, k, v, idx, w, scale=scale, backend=backend),
        q,
        keys,
        values,
        w,
    )
    return out, pullback(dout)


def reference_f32(q, keys, values, idx, w, dout, *, scale):
    """The reference forward and VJP on float32 copies of the inputs (the oracle for any dtype)."""
    f32 = [x.astype(jnp.float32) for x in (q, keys, values, dout)]
    return fwd_and_vjp(f32[0], f32[1], f32[2], idx, w, f32[3], backend="xla", scale=scale)


def assert_close(actual, expected, tol, name):
    """Relative to the largest reference magnitude (tests/kernels/tolerances.py gives tol)."""
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values"
    atol = tol * max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol, err_msg=name)


def check_against_reference(spec: Spec, dtype, seed: int, zero_fraction: float = 0.3):
    q, keys, values, idx, w, dout = make_inputs(spec, dtype, seed, zero_fraction)
    scale = spec.d**-0.5
    out, grads = fwd_and_vjp(q, keys, values, idx, w, dout, backend="interpret", scale=scale)
    ref_out, ref_grads = reference_f32(q, keys, values, idx, w, dout, scale=scale)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref_out, tolerance(dtype, "out"), "out")
    for name, g, rg, x in zip(
        ("dq", "dkeys", "dvalues", "dw"), grads, ref_grads, (q, keys, values, w)
    ):
        assert g.dtype == x.dtype and g.shape == x.shape, name
        assert_close(g, rg, tolerance(dtype, "grad"), name)
    return grads, ref_grads


@given(
    name=st.sampled_from(sorted(SPECS)),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_interpret_matches_reference(name, dtype, seed):
    check_against_reference(SPECS[name], dtype, seed)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_any_k(k):
    check_against_reference(Spec(B=1, C=2, P=16, H=2, Hkv=2, d=16, E=5, S=16, K=k), jnp.float32, k)


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
    config = GcaBlockConfig(
        block_q=block_q, block_q_dkv=block_q_dkv, block_s_dkv=16, use_cache_hints=rows % 2 == 1
    )
    attend = lambda q, k, v, w: gca_attention_pallas(
        q, k, v, idx, w, scale=0.25, interpret=True, config=config
    )
    out, pullback = jax.vjp(attend, q, keys, values, w)
    ref_out, ref_grads = reference_f32(q, keys, values, idx, w, dout, scale=0.25)
    assert_close(out, ref_out, 1e-5, "out")
    for name, g, rg in zip(("dq", "dkeys", "dvalues", "dw"), pullback(dout), ref_grads):
        assert_close(g, rg, 1e-5, name)


def test_p65_gradient_of_row_64():
    """The original kernel never writes dq of query row 64 when P = 65 (docs/spec.md §2.5)."""
    spec = SPECS["k3_gqa_p65"]
    grads, ref_grads = check_against_reference(spec, jnp.float32, seed=3, zero_fraction=0.0)
    dq_row64, ref_row64 = grads[0][:, :, 64], ref_grads[0][:, :, 64]
    assert float(jnp.max(jnp.abs(ref_row64))) > 1e-3  # The row really has a gradient.
    assert_close(dq_row64, ref_row64, tolerance(jnp.float32, "grad"), "dq row 64")


def test_tf32_probs_config_is_at_least_as_accurate():
    """use_tf32_probs keeps P and dS in float32 (interpret mode multiplies them exactly)."""
    spec = SPECS["k3_gqa_p65"]
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.bfloat16, seed=21)
    config = GcaBlockConfig(use_tf32_probs=True)
    attend = lambda q, k, v, w: gca_attention_pallas(
        q, k, v, idx, w, scale=0.25, interpret=True, config=config
    )
    out, pullback = jax.vjp(attend, q, keys, values, w)
    ref_out, ref_grads = reference_f32(q, keys, values, idx, w, dout, scale=0.25)
    # Only the final rounding to bfloat16 remains: at most half an ulp, 2**-8 relative.
    assert_close(out, ref_out, 2**-8, "out")
    for name, g, rg in zip(("dq", "dkeys", "dvalues", "dw"), pullback(dout), ref_grads):
        assert_close(g, rg, 2**-8, name)


@pytest.mark.parametrize("use_fallback", [False, True])
def test_inverse_index(use_fallback, monkeypatch):
    if use_fallback:
        monkeypatch.setattr(pallas_triton_vjp, "_MAX_COMBINED_KEY", 0)
    b, c, k, e = 3, 7, 4, 5
    ks = jax.random.split(jax.random.key(use_fallback), 2)
    idx = jax.random.randint(ks[0], (b, c, k), 0, e, dtype=jnp.int32)
    w = jnp.where(jax.random.uniform(ks[1], (b, c, k)) < 0.3, 0.0, 0.5)
    order, start, end = map(np.asarray, pallas_triton_vjp.inverse_index(idx, w, e))
    pairs_idx = np.asarray(idx).reshape(b, c * k)
    pairs_w = np.asarray(w).reshape(b, c * k)
    for bb in range(b):
        for row in range(e):
            expected = [n for n in range(c * k) if pairs_idx[bb, n] == row and pairs_w[bb, n]]
            # Ascending pair order within a row: the fixed accumulation order of dK/dV.
            assert order[bb, start[bb, row] : end[bb, row]].tolist() == expected


def test_all_padding_gives_zero_and_finite_grads():
    spec = SPECS["k3_gqa_p65"]
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=5)
    w = jnp.zeros_like(w)
    out, (dq, dk, dv, dw) = fwd_and_vjp(
        q, keys, values, idx, w, dout, backend="interpret", scale=0.25
    )
    np.testing.assert_array_equal(out, 0.0)
    for g in (dq, dk, dv):
        np.testing.assert_array_equal(g, 0.0)
    _, ref_grads = reference_f32(q, keys, values, idx, w, dout, scale=0.25)
    assert_close(dw, ref_grads[3], 1e-5, "dw")  # dw of padding slots is not zero.


def test_padding_slot_index_does_not_matter():
    spec = SPECS["k8_dups"]
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=7)
    w = w.at[:, :, ::2].set(0.0)
    other_idx = jnp.where(w == 0, (idx + 1) % spec.E, idx)
    a = fwd_and_vjp(q, keys, values, idx, w, dout, backend="interpret", scale=0.2)
    b = fwd_and_vjp(q, keys, values, other_idx, w, dout, backend="interpret", scale=0.2)
    for x, y in zip(jax.tree.leaves(a)[:4], jax.tree.leaves(b)[:4]):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_vmap_and_remat_match_reference():
    spec = SPECS["k1_c1"]
    stacked = [jnp.stack(xs) for xs in zip(*(make_inputs(spec, jnp.float32, s) for s in (1, 2)))]
    q, keys, values, idx, w, dout = stacked  # A leading vmapped axis of 2.

    def loss(q, keys, values, w, idx, dout, backend):
        attend = jax.checkpoint(
            lambda q, k, v, w: gca_attention(q, k, v, idx, w, scale=0.25, backend=backend)
        )
        return jnp.sum(attend(q, keys, values, w) * dout)

    def grads(backend):
        g = jax.grad(loss, argnums=(0, 1, 2, 3))
        return jax.jit(jax.vmap(lambda *a: g(*a, backend)))(q, keys, values, w, idx, dout)

    for name, g, rg in zip(("dq", "dkeys", "dvalues", "dw"), grads("interpret"), grads("xla")):
        assert_close(g, rg, 1e-5, name)


def test_backward_is_deterministic():
    spec = SPECS["k8_dups"]
    inputs = make_inputs(spec, jnp.bfloat16, seed=11)
    a = fwd_and_vjp(*inputs, backend="interpret", scale=0.2)
    b = fwd_and_vjp(*inputs, backend="interpret", scale=0.2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


@pytest.mark.parametrize(
    "n,hkv,dtype", [(1, 2, jnp.float32), (2, 1, jnp.float32), (65, 2, jnp.bfloat16)]
)
def test_decode_matches_reference(n, hkv, dtype):
    b, h, d, k, s = 2, 4, 16, 3, 64
    ks = jax.random.split(jax.random.key(n), 4)
    q = jax.random.normal(ks[0], (b, n, h, d), dtype)
    keys = jax.random.normal(ks[1], (b, k, s, hkv, d), dtype)
    values = jax.random.normal(ks[2], (b, k, s, hkv, d), dtype)
    w = jax.random.uniform(ks[3], (b, k)).at[:, -1].set(0.0)
    out = jax.jit(functools.partial(gca_decode, scale=0.25, backend="interpret"))(
        q, keys, values, w
    )
    f32 = [x.astype(jnp.float32) for x in (q, keys, values)]
    ref = reference.gca_decode_reference(*f32, w, scale=0.25)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref, tolerance(dtype, "out"), "decode")


def test_decode_equals_attention_on_gathered_chunks():
    spec = SPECS["k3_gqa_p65"]
    q, keys, values, idx, w, _ = make_inputs(spec, jnp.float32, seed=2)
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
    assert_close(out, full[:, c], 1e-5, "decode vs attention")


def test_contract_violations_raise():
    spec = SPECS["k1_c1"]
    q, keys, values, idx, w, _ = make_inputs(spec, jnp.float32, seed=0)
    with pytest.raises(UnsupportedInputError, match="int32"):
        gca_attention(q, keys, values, idx.astype(jnp.float32), w, scale=1.0, backend="xla")
    with pytest.raises(UnsupportedInputError, match="multiple"):
        gca_attention(q[..., :1, :], keys.repeat(2, 3), values.repeat(2, 3), idx, w, scale=1.0)
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


def _lowered_text(fn, *args):
    mesh = AbstractMesh((), (), (), abstract_device=H200)  # Empty mesh: docs/stack-notes.md §2.
    with use_abstract_mesh(mesh):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize(
    "p,dtype,config",
    [
        (64, jnp.bfloat16, None),
        (65, jnp.float32, None),
        (
            65,
            jnp.bfloat16,
            GcaBlockConfig(
                use_tf32_probs=True, use_cache_hints=True, block_s_dkv=32, block_q_dkv=32
            ),
        ),
    ],
)
def test_cuda_lowering_forward_and_backward(p, dtype, config):
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
            q, keys, values, idx, w, scale=0.125, interpret=False, config=config
        )

    def loss_and_grads(q, keys, values, idx, w):
        loss = lambda q, k, v, w: jnp.sum(forward(q, k, v, idx, w).astype(jnp.float32) ** 2)
        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, keys, values, w)

    text = _lowered_text(forward, *args)
    assert "xla.gpu.triton" in text and "gca_fwd" in text
    text = _lowered_text(loss_and_grads, *args)
    assert text.count("xla.gpu.triton") == 3
    for name in ("gca_fwd", "gca_bwd_dq", "gca_bwd_dkv"):
        assert name in text, name


def test_cuda_lowering_decode():
    sds = jax.ShapeDtypeStruct
    args = (
        sds((3, 1, 4, 64), jnp.bfloat16),
        sds((3, 8, 64, 4, 64), jnp.bfloat16),
        sds((3, 8, 64, 4, 64), jnp.bfloat16),
        sds((3, 8), jnp.float32),
    )
    text = _lowered_text(functools.partial(gca_decode, scale=0.125, backend="pallas"), *args)
    assert "xla.gpu.triton" in text and "gca_decode" in text


def test_shard_map_grad_equals_unsharded():
    """Batch over "data", heads over "tensor": each device runs the kernel on its local heads."""
    spec = Spec(B=2, C=2, P=16, H=8, Hkv=4, d=16, E=3, S=16, K=2)
    q, keys, values, idx, w, dout = make_inputs(spec, jnp.float32, seed=13)
    mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
    heads = P("data", None, None, "tensor", None)

    def loss(q, keys, values, w, *, sharded):
        def attend(q, keys, values, idx, w):
            return gca_attention(q, keys, values, idx, w, scale=0.25, backend="interpret")

        if sharded:
            attend = jax.shard_map(
                attend,
                mesh=mesh,
                in_specs=(heads, heads, heads, P("data"), P("data")),
                out_specs=heads,
                check_vma=False,
            )
        return jnp.sum(attend(q, keys, values, idx, w) * dout)

    grad = lambda sharded: jax.jit(
        jax.grad(functools.partial(loss, sharded=sharded), argnums=(0, 1, 2, 3))
    )(q, keys, values, w)
    for x, y in zip(grad(True), grad(False)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pallas_on_gpu_matches_reference(dtype):
    spec = Spec(B=2, C=8, P=65, H=4, Hkv=2, d=64, E=8, S=64, K=8)
    q, keys, values, idx, w, dout = make_inputs(spec, dtype, seed=17)
    out, grads = fwd_and_vjp(q, keys, values, idx, w, dout, backend="pallas", scale=0.125)
    ref_out, ref_grads = reference_f32(q, keys, values, idx, w, dout, scale=0.125)
    tol = {jnp.float32: 1e-4, jnp.bfloat16: 2e-2}[dtype]
    assert_close(out, ref_out, tol, "out")
    for name, g, rg in zip(("dq", "dkeys", "dvalues", "dw"), grads, ref_grads):
        assert_close(g, rg, tol, name)
