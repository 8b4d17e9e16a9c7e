"""GCA in Pallas with Triton lowering: forward, decode, and the custom VJP around the backward.

Contract (same as kernels/gca/reference.py):

    out[b, c] = sum_k w[b, c, k] * softmax_j(q[b, c] @ keys[b, idx[b, c, k]].T * scale)
                                  @ values[b, idx[b, c, k]]

- Shapes: q (B, C, P, H, d), memory keys/values (B, E, S, Hkv, d), idx/w (B, C, K); any B, C, E,
  K >= 1 and any P >= 1. A chunk's P rows are cut into block_q-row tiles plus one smaller
  power-of-2 tail tile (P = 65: 64 + 16 rows); rows past P are masked.
- Sizes the Triton tiles impose: S and d powers of two, 16 <= S <= 128, 16 <= d <= 256, and
  scale > 0 (all checked by the public op). H % Hkv == 0 (GQA: query head h reads kv head
  h // (H // Hkv)).
- Dtypes: float32, bfloat16, float16; q, keys and values share one. Scores, softmax and the
  weighted sum are float32; probabilities and dS are cast to the input dtype before their dots
  (as the original kernel, docs/spec.md §2.2-2.3) unless use_tf32_probs. float32 inputs multiply at
  IEEE precision (no TF32).
- Softmax in base 2: on the GPU each exp2 is one ex2.approx.ftz.f32 (probabilities below
  2**-126 of a row's largest flush to 0); interpret mode uses jnp.exp2.
- Retrieved chunks are read BY INDEX inside the kernels: each program holds the whole memory of
  its (batch, kv head) as a pointer and loads row idx[b, c, k] itself. The gathered
  (B, C, K, S, H, d) tensor never exists, forward or backward.
- Forward residual: the per-(row, retrieved chunk) log-sum-exp in base 2, (B, C, H, K, P_pad)
  float32 (P_pad = the rows the tiles cover, 64 for P = 64, 80 for P = 65). No probabilities,
  per-chunk outputs or gathered chunks are saved.
- Backward (kernels/gca/pallas_triton_vjp.py): a dq kernel over query tiles that also writes the
  per-chunk delta = <dO, O_k> (dw is its sum over heads and rows, in XLA), and a dK/dV kernel over
  memory rows that walks an inverse index (pairs sorted by row, ascending within a row), so dK/dV
  are accumulated in a fixed order without atomics: same inputs, same bits.
- Decode (gca_decode_pallas): N query rows against K chunks already gathered by the caller;
  forward only.
- Block sizes, warps and stages: GcaBlockConfig (kernels/gca/_common.py), static.

Tile letters besides the glossary's: Q query rows of one tile, N decode query rows.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.gca import pallas_triton_vjp as vjp
from kernels.gca._common import (
    LOG2_E,
    GcaBlockConfig,
    dot,
    exp2,
    for_row_tile,
    prob_dot,
    row_mask,
    row_tiles,
)


def _gca_fwd_kernel(
    q_ref,
    keys_ref,
    values_ref,
    idx_ref,
    w_ref,
    out_ref,
    lse_ref,
    *,
    scale,
    use_tf32,
    rows,
    num_k,
    tiles,
    ftz,
):
    """One (query chunk, row tile, head, batch): loops over the K retrieved chunks.

    Refs: q/out (P, d); keys/values (E, S, d) — the whole memory of this (batch, kv head);
    idx/w (K,); lse (K, P_pad) base-2 log-sum-exp.
    """
    qk_scale = scale * LOG2_E  # Softmax in base 2: exp2 is the fast path on the GPU.

    def tile(q0, block_q):
        mask_Q = row_mask(q0, block_q, rows)
        q_Qxd = plt.load(q_ref.at[pl.ds(q0, block_q), :], mask=mask_Q[:, None], other=0.0)

        def one_chunk(k, acc_Qxd):
            e = idx_ref[k]
            k_Sxd = plt.load(keys_ref.at[e, :, :])
            v_Sxd = plt.load(values_ref.at[e, :, :])
            s_QxS = dot(q_Qxd, k_Sxd, trans_b=True)
            # scale > 0, so the max commutes with it; exp2(s * c - m) is one FMA per score.
            m_Q = jnp.max(s_QxS, axis=1) * qk_scale
            p_QxS = exp2(s_QxS * qk_scale - m_Q[:, None], ftz=ftz)
            l_Q = jnp.sum(p_QxS, axis=1)
            o_Qxd = prob_dot(p_QxS, v_Sxd, use_tf32=use_tf32)
            lse_ref[k, pl.ds(q0, block_q)] = m_Q + jnp.log2(l_Q)
            coef_Q = w_ref[k].astype(jnp.float32) / l_Q
            return acc_Qxd + o_Qxd * coef_Q[:, None]

        acc_Qxd = jax.lax.fori_loop(
            0, num_k, one_chunk, jnp.zeros((block_q, q_Qxd.shape[1]), jnp.float32)
        )
        plt.store(
            out_ref.at[pl.ds(q0, block_q), :], acc_Qxd.astype(out_ref.dtype), mask=mask_Q[:, None]
        )

    for_row_tile(tiles, pl.program_id(0) % tiles.count, tile)


def gca_forward(
    q_BxCxPxHxd,
    keys_BxExSxHkvxd,
    values_BxExSxHkvxd,
    idx_BxCxK,
    w_BxCxK,
    *,
    scale,
    config: GcaBlockConfig,
    use_tf32_probs: bool,
    interpret: bool,
):
    """Runs the forward kernel; returns (out (B, C, P, H, d), lse2 (B, C, H, K, P_pad) f32)."""
    b, c, p, h, d = q_BxCxPxHxd.shape
    e, s, hkv = keys_BxExSxHkvxd.shape[1:4]
    k = idx_BxCxK.shape[2]
    group = h // hkv
    tiles = row_tiles(p, config.block_q)
    nt = tiles.count
    kernel = functools.partial(
        _gca_fwd_kernel,
        scale=scale,
        use_tf32=use_tf32_probs,
        rows=p,
        num_k=k,
        tiles=tiles,
        ftz=not interpret,
    )
    q_spec = pl.BlockSpec((None, None, p, None, d), lambda i, hh, bb: (bb, i // nt, 0, hh, 0))
    mem_spec = pl.BlockSpec((None, e, s, None, d), lambda i, hh, bb: (bb, 0, 0, hh // group, 0))
    ck_spec = pl.BlockSpec((None, None, k), lambda i, hh, bb: (bb, i // nt, 0))
    lse_spec = pl.BlockSpec(
        (None, None, None, k, tiles.padded), lambda i, hh, bb: (bb, i // nt, hh, 0, 0)
    )
    return pl.pallas_call(
        kernel,
        grid=(c * nt, h, b),  # Query chunks fastest: concurrent programs share one memory slab.
        in_specs=[q_spec, mem_spec, mem_spec, ck_spec, ck_spec],
        out_specs=[q_spec, lse_spec],
        out_shape=[
            jax.ShapeDtypeStruct(q_BxCxPxHxd.shape, q_BxCxPxHxd.dtype),
            jax.ShapeDtypeStruct((b, c, h, k, tiles.padded), jnp.float32),
        ],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        ),
        interpret=interpret,
        name="gca_fwd",
    )(q_BxCxPxHxd, keys_BxExSxHkvxd, values_BxExSxHkvxd, idx_BxCxK, w_BxCxK)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _gca(q, keys, values, idx, w, scale, config, use_tf32_probs, interpret):
    """GCA through the kernels (shared by "pallas" and "interpret"); arrays as in gca_forward."""
    static = dict(scale=scale, config=config, use_tf32_probs=use_tf32_probs, interpret=interpret)
    out, _ = gca_forward(q, keys, values, idx, w, **static)
    return out


def _gca_vjp_fwd(q, keys, values, idx, w, scale, config, use_tf32_probs, interpret):
    static = dict(scale=scale, config=config, use_tf32_probs=use_tf32_probs, interpret=interpret)
    out, lse2 = gca_forward(q, keys, values, idx, w, **static)
    return out, (q, keys, values, idx, w, lse2)


def _gca_vjp_bwd(scale, config, use_tf32_probs, interpret, residuals, dout):
    q, keys, values, idx, w, lse2 = residuals
    static = dict(scale=scale, config=config, use_tf32_probs=use_tf32_probs, interpret=interpret)
    dq, dkeys, dvalues, dw = vjp.gca_backward(q, keys, values, idx, w, lse2, dout, **static)
    return dq, dkeys, dvalues, None, dw


_gca.defvjp(_gca_vjp_fwd, _gca_vjp_bwd)


def gca_attention_pallas(
    q_BxCxPxHxd,
    keys_BxExSxHkvxd,
    values_BxExSxHkvxd,
    idx_BxCxK,
    w_BxCxK,
    *,
    scale: float,
    interpret: bool,
    use_tf32_probs: bool = False,
    config: GcaBlockConfig | None = None,
):
    """GCA through the Pallas kernels (inputs already validated by kernels.gca.gca_attention).

    config defaults to ``GcaBlockConfig.default(P, S)``; use_tf32_probs as in gca_attention.
    """
    if config is None:
        config = GcaBlockConfig.default(q_BxCxPxHxd.shape[2], keys_BxExSxHkvxd.shape[2])
    config.validate(keys_BxExSxHkvxd.shape[2])
    return _gca(
        q_BxCxPxHxd,
        keys_BxExSxHkvxd,
        values_BxExSxHkvxd,
        idx_BxCxK,
        w_BxCxK,
        float(scale),
        config,
        bool(use_tf32_probs),
        bool(interpret),
    )


def _gca_decode_kernel(
    q_ref, keys_ref, values_ref, w_ref, out_ref, *, scale, rows, num_k, block_n, ftz
):
    """One (query tile, head, batch) of a decode step over K retrieved chunks.

    Refs: q/out (N, d); keys/values (K, S, d); w (K,).
    """
    n0 = pl.program_id(0) * block_n
    mask_N = row_mask(n0, block_n, rows)
    q_Nxd = plt.load(q_ref.at[pl.ds(n0, block_n), :], mask=mask_N[:, None], other=0.0)
    qk_scale = scale * LOG2_E

    def one_chunk(k, acc_Nxd):
        k_Sxd = keys_ref[k, :, :]
        v_Sxd = values_ref[k, :, :]
        s_NxS = dot(q_Nxd, k_Sxd, trans_b=True)
        m_N = jnp.max(s_NxS, axis=1) * qk_scale  # scale > 0 (checked by the public op).
        p_NxS = exp2(s_NxS * qk_scale - m_N[:, None], ftz=ftz)
        l_N = jnp.sum(p_NxS, axis=1)
        o_Nxd = dot(p_NxS.astype(v_Sxd.dtype), v_Sxd)
        return acc_Nxd + o_Nxd * (w_ref[k].astype(jnp.float32) / l_N)[:, None]

    acc_Nxd = jax.lax.fori_loop(
        0, num_k, one_chunk, jnp.zeros((block_n, q_Nxd.shape[1]), jnp.float32)
    )
    plt.store(
        out_ref.at[pl.ds(n0, block_n), :], acc_Nxd.astype(out_ref.dtype), mask=mask_N[:, None]
    )


def gca_decode_pallas(
    q_BxNxHxd,
    keys_BxKxSxHkvxd,
    values_BxKxSxHkvxd,
    w_BxK,
    *,
    scale: float,
    interpret: bool,
    config: GcaBlockConfig | None = None,
):
    """GCA decode step through the Pallas kernel (inputs validated by kernels.gca.gca_decode).

    config defaults to ``GcaBlockConfig.default(N, S)``; only its decode fields are read.
    """
    b, n, h, d = q_BxNxHxd.shape
    k, s, hkv = keys_BxKxSxHkvxd.shape[1:4]
    group = h // hkv
    if config is None:
        config = GcaBlockConfig.default(n, s)
    bn = config.block_n_decode
    kernel = functools.partial(
        _gca_decode_kernel, scale=float(scale), rows=n, num_k=k, block_n=bn, ftz=not interpret
    )
    q_spec = pl.BlockSpec((None, n, None, d), lambda i, hh, bb: (bb, 0, hh, 0))
    mem_spec = pl.BlockSpec((None, k, s, None, d), lambda i, hh, bb: (bb, 0, 0, hh // group, 0))
    return pl.pallas_call(
        kernel,
        grid=(pl.cdiv(n, bn), h, b),
        in_specs=[q_spec, mem_spec, mem_spec, pl.BlockSpec((None, k), lambda i, hh, bb: (bb, 0))],
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q_BxNxHxd.shape, q_BxNxHxd.dtype),
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        ),
        interpret=bool(interpret),
        name="gca_decode",
    )(q_BxNxHxd, keys_BxKxSxHkvxd, values_BxKxSxHkvxd, w_BxK)
