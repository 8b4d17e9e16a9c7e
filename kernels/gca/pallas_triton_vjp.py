"""Backward of the GCA Pallas-Triton kernels: dq (+ delta), dK/dV over memory rows, dw.

Maths (docs/spec.md §2.3), per query chunk c, retrieved slot k (memory row e = idx[c, k]) and head:

    P_k = exp2(s_k * LOG2_E - lse2_k)            probabilities recomputed from the saved LSE
    dP_k = dO V_e^T
    delta_k[t] = <dO_t, O_k[t]> = sum_j P_k[t, j] dP_k[t, j]     (O_k = P_k V_e, never formed)
    dw_k = sum over heads and rows of delta_k
    dS_k = w_k P_k * (dP_k - delta_k)
    dq = scale * sum_k dS_k K_e
    dK_e += scale * dS_k^T q,  dV_e += w_k P_k^T dO   over every (c, k) with idx[c, k] = e

The dq kernel runs over query tiles, like the forward, and writes dq and delta. The dK/dV kernel
runs over (memory row, slot tile, kv head, batch), computes its scores slots-by-queries (so P^T
and dS^T need no transpose before their dots) and walks the (c, k) pairs that retrieved its
row, found through an inverse index built in XLA (a stable sort of the flattened idx). Pairs with
w = 0 are sorted past the last row and never visited: they add exactly nothing to dK/dV, and this
keeps padding slots (often all pointing at row 0) from piling onto one program. The walk order is
fixed by the stable sort, so dK/dV are bitwise reproducible (no atomics). Nothing of size
(B, C, K, S, H, d) is ever built.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

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

# Largest row * N + pair key sorted as one int32 (module-level so tests can force the fallback).
_MAX_COMBINED_KEY = 2**31 - 1


def inverse_index(
    idx_BxCxK: jax.Array, w_BxCxK: jax.Array, num_rows: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For each memory row, the (c, k) pairs that retrieved it with a nonzero weight.

    Worked example (B = 1, K = 2, E = 3): idx = [[0, 2], [2, 2]], w all nonzero. The flattened
    pairs n = c * K + k have keys [0, 2, 2, 2]; the stable order is [0, 1, 2, 3]; row 0 owns
    order[0:1] (pair 0), row 1 owns nothing, row 2 owns order[1:4] (pairs 1, 2, 3).

    Args:
      idx_BxCxK: int32 retrieved rows.
      w_BxCxK: retrieval weights; pairs with w == 0 are left out.
      num_rows: E, the number of memory rows.

    Returns:
      order_BxN (N = C * K) int32 pair ids sorted by row, and start_BxE / end_BxE int32: row e
      owns order[start[e]:end[e]].
    """
    b, c, k = idx_BxCxK.shape
    n = c * k
    key_BxN = jnp.where(w_BxCxK != 0, idx_BxCxK, num_rows).reshape(b, n)
    pair_N = jnp.arange(n, dtype=jnp.int32)
    if (num_rows + 1) * n <= _MAX_COMBINED_KEY:
        # One int32 sort of the unique keys row * N + pair: the same order as a stable argsort,
        # but a single-operand sort (measured: the two-operand stable argsort plus searchsorted's
        # while loop cost 0.46 ms on an H200 at the paper's shape).
        combined_BxN = jnp.sort(key_BxN * n + pair_N[None, :], axis=1)
        order_BxN = combined_BxN % n
    else:
        order_BxN = jnp.argsort(key_BxN, axis=1, stable=True).astype(jnp.int32)
    # Row e owns order[start[e]:end[e]], end = inclusive prefix sum of per-row counts. Integer
    # scatter-adds are exact, so the counts do not depend on the order of the atomic adds.
    batch_BxN = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], (b, n))
    counts_BxE1 = jnp.zeros((b, num_rows + 1), jnp.int32).at[batch_BxN, key_BxN].add(1)
    end_BxE = jnp.cumsum(counts_BxE1[:, :num_rows], axis=1, dtype=jnp.int32)
    return order_BxN.astype(jnp.int32), end_BxE - counts_BxE1[:, :num_rows], end_BxE


def _gca_bwd_dq_kernel(
    q_ref,
    keys_ref,
    values_ref,
    idx_ref,
    w_ref,
    lse_ref,
    do_ref,
    dq_ref,
    delta_ref,
    *,
    scale,
    use_tf32,
    rows,
    num_k,
    tiles,
    ftz,
):
    """One (query chunk, row tile, head, batch): dq and delta over the K retrieved chunks.

    Refs: q/do/dq (P, d); keys/values (E, S, d); idx/w (K,); lse/delta (K, P_pad).
    """
    qk_scale = scale * LOG2_E

    def tile(q0, block_q):
        mask_Q = row_mask(q0, block_q, rows)
        q_Qxd = plt.load(q_ref.at[pl.ds(q0, block_q), :], mask=mask_Q[:, None], other=0.0)
        do_Qxd = plt.load(do_ref.at[pl.ds(q0, block_q), :], mask=mask_Q[:, None], other=0.0)

        def one_chunk(k, dq_Qxd):
            e = idx_ref[k]
            k_Sxd = plt.load(keys_ref.at[e, :, :])
            v_Sxd = plt.load(values_ref.at[e, :, :])
            lse_Q = lse_ref[k, pl.ds(q0, block_q)]
            p_QxS = exp2(dot(q_Qxd, k_Sxd, trans_b=True) * qk_scale - lse_Q[:, None], ftz=ftz)
            dp_QxS = dot(do_Qxd, v_Sxd, trans_b=True)
            # <dO, O_k> = <dO, P_k V> = rowsum(P_k * dO V^T): O_k = P_k V is never recomputed.
            delta_Q = jnp.sum(p_QxS * dp_QxS, axis=1)
            delta_ref[k, pl.ds(q0, block_q)] = delta_Q
            ds_QxS = (w_ref[k].astype(jnp.float32) * p_QxS) * (dp_QxS - delta_Q[:, None])
            return dq_Qxd + prob_dot(ds_QxS, k_Sxd, use_tf32=use_tf32)

        dq_Qxd = jax.lax.fori_loop(
            0, num_k, one_chunk, jnp.zeros((block_q, q_Qxd.shape[1]), jnp.float32)
        )
        plt.store(
            dq_ref.at[pl.ds(q0, block_q), :],
            (dq_Qxd * scale).astype(dq_ref.dtype),
            mask=mask_Q[:, None],
        )

    for_row_tile(tiles, pl.program_id(0) % tiles.count, tile)


def _gca_bwd_dkv_kernel(
    q_ref,
    do_ref,
    keys_ref,
    values_ref,
    w_ref,
    lse_ref,
    delta_ref,
    order_ref,
    start_ref,
    end_ref,
    dk_ref,
    dv_ref,
    *,
    scale,
    use_tf32,
    rows,
    num_k,
    group,
    tiles,
    block_s,
    num_s_blocks,
    ftz,
):
    """One (memory row, slot tile, kv head, batch): dK/dV over the pairs that retrieved the row.

    Refs: q/do (C, P, H, d) of this batch; keys/values/dk/dv (S, d) of this row and kv head;
    w (C, K); lse/delta (C, H, K, P_pad); order (C*K,); start/end (E,).
    """
    row = pl.program_id(0) // num_s_blocks
    s0 = (pl.program_id(0) % num_s_blocks) * block_s
    kv_head = pl.program_id(1)
    k_Sxd = plt.load(keys_ref.at[pl.ds(s0, block_s), :])
    v_Sxd = plt.load(values_ref.at[pl.ds(s0, block_s), :])
    qk_scale = scale * LOG2_E

    def one_pair(j, carry):
        pair = order_ref[j]
        c = jax.lax.div(pair, num_k)
        k = jax.lax.rem(pair, num_k)
        w = w_ref[c, k].astype(jnp.float32)

        def one_tile(head, q0, block_q, carry):
            dk_Sxd, dv_Sxd = carry
            mask_Q = row_mask(q0, block_q, rows)[:, None]
            q_Qxd = plt.load(q_ref.at[c, pl.ds(q0, block_q), head, :], mask=mask_Q, other=0.0)
            do_Qxd = plt.load(do_ref.at[c, pl.ds(q0, block_q), head, :], mask=mask_Q, other=0.0)
            lse_Q = lse_ref[c, head, k, pl.ds(q0, block_q)]
            delta_Q = delta_ref[c, head, k, pl.ds(q0, block_q)]
            # Scores as S x Q (slots by rows): P^T and dS^T come out of their dots already in
            # the layout that dV += (w P)^T dO and dK += dS^T q take, with no register transpose.
            s_SxQ = dot(k_Sxd, q_Qxd, trans_b=True)
            wp_SxQ = w * exp2(s_SxQ * qk_scale - lse_Q[None, :], ftz=ftz)
            dv_Sxd = dv_Sxd + prob_dot(wp_SxQ, do_Qxd, use_tf32=use_tf32)
            dp_SxQ = dot(v_Sxd, do_Qxd, trans_b=True)
            ds_SxQ = wp_SxQ * (dp_SxQ - delta_Q[None, :])
            dk_Sxd = dk_Sxd + prob_dot(ds_SxQ, q_Qxd, use_tf32=use_tf32)
            return dk_Sxd, dv_Sxd

        def one_head(g, carry):
            head = kv_head * group + g
            # Tile starts are traced (0 * head + ...): a static start whose tile runs past P
            # fails the bounds check, and a jnp constant breaks the Triton lowering of the load.
            zero = 0 * head
            if tiles.num_main == 1:
                carry = one_tile(head, zero, tiles.block, carry)
            elif tiles.num_main > 1:
                carry = jax.lax.fori_loop(
                    0,
                    tiles.num_main,
                    lambda t, cr: one_tile(head, t * tiles.block, tiles.block, cr),
                    carry,
                )
            if tiles.tail:
                carry = one_tile(head, zero + tiles.num_main * tiles.block, tiles.tail, carry)
            return carry

        if group == 1:
            return one_head(0, carry)
        return jax.lax.fori_loop(0, group, one_head, carry)

    zeros_Sxd = jnp.zeros((block_s, k_Sxd.shape[1]), jnp.float32)
    dk_Sxd, dv_Sxd = jax.lax.fori_loop(
        start_ref[row], end_ref[row], one_pair, (zeros_Sxd, zeros_Sxd)
    )
    dk_ref[pl.ds(s0, block_s), :] = (dk_Sxd * scale).astype(dk_ref.dtype)
    dv_ref[pl.ds(s0, block_s), :] = dv_Sxd.astype(dv_ref.dtype)


def backward_dq(
    q_BxCxPxHxd,
    keys_BxExSxHkvxd,
    values_BxExSxHkvxd,
    idx_BxCxK,
    w_BxCxK,
    lse2_BxCxHxKxPp,
    dout_BxCxPxHxd,
    *,
    scale,
    config: GcaBlockConfig,
    use_tf32_probs: bool,
    interpret: bool,
):
    """The dq kernel: returns dq (like q) and delta (like lse2, float32; Pp = P_pad)."""
    b, c, p, h, d = q_BxCxPxHxd.shape
    e, s, hkv = keys_BxExSxHkvxd.shape[1:4]
    k = idx_BxCxK.shape[2]
    group = h // hkv
    tiles = row_tiles(p, config.block_q)
    nt = tiles.count
    p_pad = lse2_BxCxHxKxPp.shape[-1]
    assert p_pad == tiles.padded, (p_pad, tiles)
    params = plt.CompilerParams(num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd)

    q_spec = pl.BlockSpec((None, None, p, None, d), lambda i, hh, bb: (bb, i // nt, 0, hh, 0))
    mem_spec = pl.BlockSpec((None, e, s, None, d), lambda i, hh, bb: (bb, 0, 0, hh // group, 0))
    ck_spec = pl.BlockSpec((None, None, k), lambda i, hh, bb: (bb, i // nt, 0))
    lse_spec = pl.BlockSpec((None, None, None, k, p_pad), lambda i, hh, bb: (bb, i // nt, hh, 0, 0))
    dq_BxCxPxHxd, delta_BxCxHxKxPp = pl.pallas_call(
        functools.partial(
            _gca_bwd_dq_kernel,
            scale=scale,
            use_tf32=use_tf32_probs,
            rows=p,
            num_k=k,
            tiles=tiles,
            ftz=not interpret,
        ),
        grid=(c * nt, h, b),
        in_specs=[q_spec, mem_spec, mem_spec, ck_spec, ck_spec, lse_spec, q_spec],
        out_specs=[q_spec, lse_spec],
        out_shape=[
            jax.ShapeDtypeStruct(q_BxCxPxHxd.shape, q_BxCxPxHxd.dtype),
            jax.ShapeDtypeStruct(lse2_BxCxHxKxPp.shape, jnp.float32),
        ],
        compiler_params=params,
        interpret=interpret,
        name="gca_bwd_dq",
    )(
        q_BxCxPxHxd,
        keys_BxExSxHkvxd,
        values_BxExSxHkvxd,
        idx_BxCxK,
        w_BxCxK,
        lse2_BxCxHxKxPp,
        dout_BxCxPxHxd,
    )
    return dq_BxCxPxHxd, delta_BxCxHxKxPp


def backward_dkv(
    q_BxCxPxHxd,
    keys_BxExSxHkvxd,
    values_BxExSxHkvxd,
    idx_BxCxK,
    w_BxCxK,
    lse2_BxCxHxKxPp,
    delta_BxCxHxKxPp,
    dout_BxCxPxHxd,
    *,
    scale,
    config: GcaBlockConfig,
    use_tf32_probs: bool,
    interpret: bool,
):
    """The inverse index (XLA) and the dK/dV kernel: returns dkeys, dvalues."""
    b, c, p, h, d = q_BxCxPxHxd.shape
    e, s, hkv = keys_BxExSxHkvxd.shape[1:4]
    k = idx_BxCxK.shape[2]
    group = h // hkv
    p_pad = lse2_BxCxHxKxPp.shape[-1]
    params = plt.CompilerParams(num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd)
    order_BxN, start_BxE, end_BxE = inverse_index(idx_BxCxK, w_BxCxK, e)
    tiles_kv = row_tiles(p, config.block_q_dkv)
    assert tiles_kv.padded <= p_pad, (tiles_kv, p_pad)  # block_q_dkv <= block_q.
    bs = config.block_s_dkv
    ns = s // bs
    batch_spec5 = pl.BlockSpec((None, c, p, h, d), lambda i, hh, bb: (bb, 0, 0, 0, 0))
    row_spec = pl.BlockSpec((None, None, s, None, d), lambda i, hh, bb: (bb, i // ns, 0, hh, 0))
    res_spec = pl.BlockSpec((None, c, h, k, p_pad), lambda i, hh, bb: (bb, 0, 0, 0, 0))
    dkeys_BxExSxHkvxd, dvalues_BxExSxHkvxd = pl.pallas_call(
        functools.partial(
            _gca_bwd_dkv_kernel,
            scale=scale,
            use_tf32=use_tf32_probs,
            rows=p,
            num_k=k,
            group=group,
            tiles=tiles_kv,
            block_s=bs,
            num_s_blocks=ns,
            ftz=not interpret,
        ),
        grid=(e * ns, hkv, b),  # Memory rows fastest: concurrent programs share q/dO of a batch.
        in_specs=[
            batch_spec5,
            batch_spec5,
            row_spec,
            row_spec,
            pl.BlockSpec((None, c, k), lambda i, hh, bb: (bb, 0, 0)),
            res_spec,
            res_spec,
            pl.BlockSpec((None, c * k), lambda i, hh, bb: (bb, 0)),
            pl.BlockSpec((None, e), lambda i, hh, bb: (bb, 0)),
            pl.BlockSpec((None, e), lambda i, hh, bb: (bb, 0)),
        ],
        out_specs=[row_spec, row_spec],
        out_shape=[
            jax.ShapeDtypeStruct(keys_BxExSxHkvxd.shape, keys_BxExSxHkvxd.dtype),
            jax.ShapeDtypeStruct(values_BxExSxHkvxd.shape, values_BxExSxHkvxd.dtype),
        ],
        compiler_params=params,
        interpret=interpret,
        name="gca_bwd_dkv",
    )(
        q_BxCxPxHxd,
        dout_BxCxPxHxd,
        keys_BxExSxHkvxd,
        values_BxExSxHkvxd,
        w_BxCxK,
        lse2_BxCxHxKxPp,
        delta_BxCxHxKxPp,
        order_BxN,
        start_BxE,
        end_BxE,
    )
    return dkeys_BxExSxHkvxd, dvalues_BxExSxHkvxd


def gca_backward(
    q_BxCxPxHxd,
    keys_BxExSxHkvxd,
    values_BxExSxHkvxd,
    idx_BxCxK,
    w_BxCxK,
    lse2_BxCxHxKxPp,
    dout_BxCxPxHxd,
    *,
    scale,
    config: GcaBlockConfig,
    use_tf32_probs: bool,
    interpret: bool,
):
    """Gradients (dq, dkeys, dvalues, dw) of GCA from the forward's base-2 log-sum-exp."""
    static = dict(scale=scale, config=config, use_tf32_probs=use_tf32_probs, interpret=interpret)
    arrays = (q_BxCxPxHxd, keys_BxExSxHkvxd, values_BxExSxHkvxd, idx_BxCxK, w_BxCxK)
    dq_BxCxPxHxd, delta_BxCxHxKxPp = backward_dq(*arrays, lse2_BxCxHxKxPp, dout_BxCxPxHxd, **static)
    dkeys_BxExSxHkvxd, dvalues_BxExSxHkvxd = backward_dkv(
        *arrays, lse2_BxCxHxKxPp, delta_BxCxHxKxPp, dout_BxCxPxHxd, **static
    )
    # dw_k = sum over heads and rows of delta_k (padded rows hold delta = 0: dO is masked to 0).
    dw_BxCxK = jnp.sum(delta_BxCxHxKxPp, axis=(2, 4)).astype(w_BxCxK.dtype)
    return dq_BxCxPxHxd, dkeys_BxExSxHkvxd, dvalues_BxExSxHkvxd, dw_BxCxK
