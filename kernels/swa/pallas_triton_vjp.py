"""Backward of the SWA Pallas-Triton kernels (FlashAttention-2 style): dq, then dK/dV.

Maths, per (batch, head), in base 2 (lse2 is the forward's base-2 log-sum-exp):

    P = exp2(logits2(q k^T) - lse2)           probabilities recomputed, masked outside the band
    delta[i] = <dO_i, O_i>                     rowsum(o * do), in XLA
    dS = P * (dO V^T - delta)
    dq = scale * dS K,  dK = scale * dS^T q,  dV = P^T dO

``swa_bwd_dq`` runs over query blocks and loops over each block's key band; ``swa_bwd_dkv`` runs
over key blocks and kv heads, and loops over the query heads of the group and over each key
block's query band. Each program owns its key block, so dK and dV accumulate in registers without
atomics; its tiles hold keys on the rows, so P^T and dS^T need no transpose before their dots.

Letters as in kernels/swa/pallas_triton.py: Tp padded T, dp padded d, Hp padded H, Q and J the
query and key rows of one tile, G = H // Hkv.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.swa._common import LOG2_E, SwaBlockConfig, band, dot_precision, logits2, three_loops


def _swa_bwd_dq_kernel(
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    slopes_ref,
    dq_ref,
    *,
    window,
    scale,
    block_k,
    precision,
):
    """Computes dq of one query block of one (batch, head): P from lse, loop over the key band.

    Refs: q/do/dq (Q, dp); k/v (Tp, dp) of this (batch, kv head); lse/delta (Q,); slopes (Hp,).
    """
    block_q = q_ref.shape[0]
    q_start = pl.program_id(0) * block_q
    slope2 = slopes_ref[pl.program_id(2)] * LOG2_E
    c2 = scale * LOG2_E
    n_k = k_ref.shape[0] // block_k
    q_Qxd = q_ref[...]
    do_Qxd = do_ref[...]
    lse_Q = lse_ref[...]
    delta_Q = delta_ref[...]
    q_iota_Q = jnp.arange(block_q, dtype=jnp.int32)
    k_pos_J = jnp.arange(block_k, dtype=jnp.int32)

    def body(j, dq_Qxd, masked):
        k_start = j * block_k
        k_Jxd = k_ref[pl.ds(k_start, block_k), :]
        v_Jxd = v_ref[pl.ds(k_start, block_k), :]
        s_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision)
        s_QxJ = logits2(s_QxJ, q_iota_Q + (q_start - k_start), k_pos_J, slope2, c2, window, masked)
        p_QxJ = jnp.exp2(s_QxJ - lse_Q[:, None])
        dp_QxJ = plt.dot(do_Qxd, v_Jxd, trans_b=True, precision=precision)
        ds_QxJ = p_QxJ * (dp_QxJ - delta_Q[:, None])
        return dq_Qxd + plt.dot(ds_QxJ.astype(k_Jxd.dtype), k_Jxd, precision=precision)

    lo, b, c, hi = band(q_start, block_q, block_k, window, n_k, rows_are_q=True)
    dq_Qxd = three_loops(lo, b, c, hi, body, jnp.zeros(q_Qxd.shape, jnp.float32))
    dq_ref[...] = (dq_Qxd * scale).astype(dq_ref.dtype)


def _swa_bwd_dkv_kernel(
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    slopes_ref,
    dk_ref,
    dv_ref,
    *,
    window,
    scale,
    block_q,
    group,
    precision,
):
    """dK, dV of one key block of one kv head, looping over its query heads and query band.

    Refs: q/do (Tp, G, dp) of this (batch, kv head); k/v/dk/dv (J, dp); lse/delta (G, Tp);
    slopes (Hp,).
    """
    block_k = k_ref.shape[0]
    k_start = pl.program_id(0) * block_k
    h0 = pl.program_id(2) * group
    c2 = scale * LOG2_E
    n_q = q_ref.shape[0] // block_q
    k_Jxd = k_ref[...]
    v_Jxd = v_ref[...]
    # Transposed tiles: keys on rows, queries on columns.
    q_iota_Q = jnp.arange(block_q, dtype=jnp.int32)
    k_pos_J = jnp.arange(block_k, dtype=jnp.int32)
    lo, b, c, hi = band(k_start, block_k, block_q, window, n_q, rows_are_q=False)

    def one_head(g, carry):
        slope2 = slopes_ref[h0 + g] * LOG2_E

        def body(i, carry, masked):
            dk_Jxd, dv_Jxd = carry
            q_start = i * block_q
            q_Qxd = q_ref[pl.ds(q_start, block_q), g, :]
            do_Qxd = do_ref[pl.ds(q_start, block_q), g, :]
            lse_Q = lse_ref[g, pl.ds(q_start, block_q)]
            delta_Q = delta_ref[g, pl.ds(q_start, block_q)]
            s_JxQ = plt.dot(k_Jxd, q_Qxd, trans_b=True, precision=precision)
            q_pos_Q = q_iota_Q + (q_start - k_start)
            s_JxQ = logits2(s_JxQ, q_pos_Q, k_pos_J, slope2, c2, window, masked, keys_on_rows=True)
            p_JxQ = jnp.exp2(s_JxQ - lse_Q[None, :])
            dv_Jxd = dv_Jxd + plt.dot(p_JxQ.astype(do_Qxd.dtype), do_Qxd, precision=precision)
            dp_JxQ = plt.dot(v_Jxd, do_Qxd, trans_b=True, precision=precision)
            ds_JxQ = p_JxQ * (dp_JxQ - delta_Q[None, :])
            dk_Jxd = dk_Jxd + plt.dot(ds_JxQ.astype(q_Qxd.dtype), q_Qxd, precision=precision)
            return dk_Jxd, dv_Jxd

        return three_loops(lo, b, c, hi, body, carry)

    zeros_Jxd = jnp.zeros(k_Jxd.shape, jnp.float32)
    if group == 1:
        dk_Jxd, dv_Jxd = one_head(0, (zeros_Jxd, zeros_Jxd))
    else:
        dk_Jxd, dv_Jxd = lax.fori_loop(0, group, one_head, (zeros_Jxd, zeros_Jxd))
    dk_ref[...] = (dk_Jxd * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_Jxd.astype(dv_ref.dtype)


def backward_dq(
    q_BxTpxHxdp,
    k_BxTpxHkvxdp,
    v_BxTpxHkvxdp,
    slopes_Hp,
    lse_BxHxTp,
    delta_BxHxTp,
    do_BxTpxHxdp,
    *,
    window: int,
    scale: float,
    config: SwaBlockConfig,
    interpret: bool,
):
    """The dq kernel on padded inputs: returns dq like q."""
    B, Tp, H, dp = q_BxTpxHxdp.shape
    Hkv = k_BxTpxHkvxdp.shape[2]
    G = H // Hkv
    bq = config.block_q_dq
    row_spec = pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0))
    vec_spec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    return pl.pallas_call(
        functools.partial(
            _swa_bwd_dq_kernel,
            window=window,
            scale=scale,
            block_k=config.block_k_dq,
            precision=dot_precision(q_BxTpxHxdp.dtype),
        ),
        grid=(Tp // bq, B, H),
        in_specs=[
            row_spec,
            kv_spec,
            kv_spec,
            row_spec,
            vec_spec,
            vec_spec,
            pl.BlockSpec(slopes_Hp.shape, lambda i, b, h: (0,)),
        ],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(q_BxTpxHxdp.shape, q_BxTpxHxdp.dtype),
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd
        ),
        interpret=interpret,
        name="swa_bwd_dq",
    )(
        q_BxTpxHxdp,
        k_BxTpxHkvxdp,
        v_BxTpxHkvxdp,
        do_BxTpxHxdp,
        lse_BxHxTp,
        delta_BxHxTp,
        slopes_Hp,
    )


def backward_dkv(
    q_BxTpxHxdp,
    k_BxTpxHkvxdp,
    v_BxTpxHkvxdp,
    slopes_Hp,
    lse_BxHxTp,
    delta_BxHxTp,
    do_BxTpxHxdp,
    *,
    window: int,
    scale: float,
    config: SwaBlockConfig,
    interpret: bool,
):
    """The dK/dV kernel on padded inputs: returns dk, dv like k, v."""
    B, Tp, H, dp = q_BxTpxHxdp.shape
    Hkv = k_BxTpxHkvxdp.shape[2]
    G = H // Hkv
    bk = config.block_k_dkv
    # Group the query heads by kv head (a free reshape) so one program sees its whole group.
    q_BxTpxHkvxGxdp = q_BxTpxHxdp.reshape(B, Tp, Hkv, G, dp)
    do_BxTpxHkvxGxdp = do_BxTpxHxdp.reshape(B, Tp, Hkv, G, dp)
    grp_spec = pl.BlockSpec((None, Tp, None, G, dp), lambda j, b, hk: (b, 0, hk, 0, 0))
    grp_vec_spec = pl.BlockSpec((None, None, G, Tp), lambda j, b, hk: (b, hk, 0, 0))
    kblk_spec = pl.BlockSpec((None, bk, None, dp), lambda j, b, hk: (b, j, hk, 0))
    return pl.pallas_call(
        functools.partial(
            _swa_bwd_dkv_kernel,
            window=window,
            scale=scale,
            block_q=config.block_q_dkv,
            group=G,
            precision=dot_precision(q_BxTpxHxdp.dtype),
        ),
        grid=(Tp // bk, B, Hkv),
        in_specs=[
            grp_spec,
            kblk_spec,
            kblk_spec,
            grp_spec,
            grp_vec_spec,
            grp_vec_spec,
            pl.BlockSpec(slopes_Hp.shape, lambda j, b, hk: (0,)),
        ],
        out_specs=[kblk_spec, kblk_spec],
        out_shape=[
            jax.ShapeDtypeStruct(k_BxTpxHkvxdp.shape, k_BxTpxHkvxdp.dtype),
            jax.ShapeDtypeStruct(v_BxTpxHkvxdp.shape, v_BxTpxHkvxdp.dtype),
        ],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd
        ),
        interpret=interpret,
        name="swa_bwd_dkv",
    )(
        q_BxTpxHkvxGxdp,
        k_BxTpxHkvxdp,
        v_BxTpxHkvxdp,
        do_BxTpxHkvxGxdp,
        lse_BxHxTp.reshape(B, Hkv, G, Tp),
        delta_BxHxTp.reshape(B, Hkv, G, Tp),
        slopes_Hp,
    )


def swa_backward(
    q_BxTpxHxdp,
    k_BxTpxHkvxdp,
    v_BxTpxHkvxdp,
    slopes_Hp,
    o_BxTpxHxdp,
    lse_BxHxTp,
    do_BxTpxHxdp,
    *,
    window: int,
    scale: float,
    config: SwaBlockConfig,
    interpret: bool,
):
    """Gradients (dq, dk, dv) of SWA on padded inputs from the forward's base-2 log-sum-exp."""
    delta_BxHxTp = jnp.einsum(
        "bthd,bthd->bht", o_BxTpxHxdp.astype(jnp.float32), do_BxTpxHxdp.astype(jnp.float32)
    )  # rowsum(o * do), f32.
    static = dict(window=window, scale=scale, config=config, interpret=interpret)
    arrays = (q_BxTpxHxdp, k_BxTpxHkvxdp, v_BxTpxHkvxdp, slopes_Hp, lse_BxHxTp, delta_BxHxTp)
    dq_BxTpxHxdp = backward_dq(*arrays, do_BxTpxHxdp, **static)
    dk_BxTpxHkvxdp, dv_BxTpxHkvxdp = backward_dkv(*arrays, do_BxTpxHxdp, **static)
    return dq_BxTpxHxdp, dk_BxTpxHkvxdp, dv_BxTpxHkvxdp
