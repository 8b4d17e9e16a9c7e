"""Backward of the landmark Pallas-Triton kernels: dq, then dK/dV, from the closed forms.

Maths, per (batch, head), in the notation of kernels/landmark/reference.py. For query i and a
past block j: pi_ij = exp(s_i,l_j) / Z_i (= exp2(lmk2 - lse2), lse2 the forward's base-2
logsumexp), n_it the in-block softmax over block j's non-landmark keys, ō_ij = sum_t n_it v_t;
for the own block p_it = exp(s_it) / Z_i. With dP_it = dO_i . v_t and delta_i = dO_i . O_i
(rowsum(o * do), in XLA):

    own key t:               dS_it   = p_it (dP_it - delta_i),       dV_t += p_it dO_i
    past non-landmark key t: dS_it   = pi_ij n_it (dP_it - dO_i.ō_ij), dV_t += pi_ij n_it dO_i
    past landmark l_j:       dS_i,lj = pi_ij (dO_i.ō_ij - delta_i)    (no value weight)

with dO_i.ō_ij = sum_t n_it dP_it, then dq = scale * dS K and dK = scale * dS^T q.

``landmark_bwd_dq`` runs over query blocks and loops over key blocks j <= c;
``landmark_bwd_dkv`` runs over key blocks and kv heads and loops over the query heads of the
group and over query blocks i >= j. Each program owns its outputs, so nothing is accumulated
across programs: no atomics, deterministic. dK/dV tiles hold keys on the rows, so the in-block
softmax reduces over axis 0 and P^T, dS^T need no transpose before their dots.

Letters as in kernels/landmark/pallas_triton.py: dp padded d, Q query rows and J key rows of one
tile (both P), G = H // Hkv.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.landmark._common import (
    LOG2_E,
    LandmarkBlockConfig,
    diagonal_mask,
    dot_precision,
    landmark_slot,
    past_block,
)


def _landmark_bwd_dq_kernel(
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, precision
):
    """Computes dq of one query block of one (batch, head). Refs: q/do/dq (Q, dp); k/v (T, dp)."""
    p = q_ref.shape[0]
    c = pl.program_id(0)
    c2 = scale * LOG2_E
    q_Qxd, do_Qxd = q_ref[...], do_ref[...]
    lse_Q, delta_Q = lse_ref[...], delta_ref[...]
    is_lmk_1xJ = landmark_slot(p, axis=1)

    def past(j, dq_Qxd):
        k_Jxd = k_ref[pl.ds(j * p, p), :]
        v_Jxd = v_ref[pl.ds(j * p, p), :]
        s2_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision) * c2
        lmk2_Q, n_QxJ = past_block(s2_QxJ, key_axis=1)
        pi_Q = jnp.exp2(lmk2_Q - lse_Q)
        dp_QxJ = plt.dot(do_Qxd, v_Jxd, trans_b=True, precision=precision)
        doo_Q = jnp.sum(n_QxJ * dp_QxJ, axis=1)
        ds_QxJ = pi_Q[:, None] * n_QxJ * (dp_QxJ - doo_Q[:, None])
        ds_QxJ = jnp.where(is_lmk_1xJ, (pi_Q * (doo_Q - delta_Q))[:, None], ds_QxJ)
        return dq_Qxd + plt.dot(ds_QxJ.astype(k_Jxd.dtype), k_Jxd, precision=precision)

    dq_Qxd = lax.fori_loop(0, c, past, jnp.zeros(q_Qxd.shape, jnp.float32))
    k_Jxd = k_ref[pl.ds(c * p, p), :]
    v_Jxd = v_ref[pl.ds(c * p, p), :]
    s2_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision) * c2
    p_QxJ = jnp.exp2(jnp.where(diagonal_mask(p), s2_QxJ, -jnp.inf) - lse_Q[:, None])
    dp_QxJ = plt.dot(do_Qxd, v_Jxd, trans_b=True, precision=precision)
    ds_QxJ = p_QxJ * (dp_QxJ - delta_Q[:, None])
    dq_Qxd = dq_Qxd + plt.dot(ds_QxJ.astype(k_Jxd.dtype), k_Jxd, precision=precision)
    dq_ref[...] = (dq_Qxd * scale).astype(dq_ref.dtype)


def _landmark_bwd_dkv_kernel(
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, scale, group, precision
):
    """dK, dV of one key block of one kv head, looping over its query heads and query blocks.

    Refs: q/do (T, G, dp) of this (batch, kv head); k/v/dk/dv (J, dp); lse/delta (G, T).
    """
    p = k_ref.shape[0]
    j = pl.program_id(0)
    num_blocks = q_ref.shape[0] // p
    c2 = scale * LOG2_E
    k_Jxd, v_Jxd = k_ref[...], v_ref[...]
    is_lmk_Jx1 = landmark_slot(p, axis=0)
    visible_JxQ = diagonal_mask(p, keys_on_rows=True)

    def one_head(g, carry):
        def tile(i):
            rows = pl.ds(i * p, p)
            q_Qxd, do_Qxd = q_ref[rows, g, :], do_ref[rows, g, :]
            lse_Q, delta_Q = lse_ref[g, rows], delta_ref[g, rows]
            s2_JxQ = plt.dot(k_Jxd, q_Qxd, trans_b=True, precision=precision) * c2
            dp_JxQ = plt.dot(v_Jxd, do_Qxd, trans_b=True, precision=precision)
            return q_Qxd, do_Qxd, lse_Q, delta_Q, s2_JxQ, dp_JxQ

        def accumulate(carry, p_JxQ, ds_JxQ, q_Qxd, do_Qxd):
            dk_Jxd, dv_Jxd = carry
            dv_Jxd = dv_Jxd + plt.dot(p_JxQ.astype(do_Qxd.dtype), do_Qxd, precision=precision)
            dk_Jxd = dk_Jxd + plt.dot(ds_JxQ.astype(q_Qxd.dtype), q_Qxd, precision=precision)
            return dk_Jxd, dv_Jxd

        # The diagonal: queries of the key block's own landmark block.
        q_Qxd, do_Qxd, lse_Q, delta_Q, s2_JxQ, dp_JxQ = tile(j)
        p_JxQ = jnp.exp2(jnp.where(visible_JxQ, s2_JxQ, -jnp.inf) - lse_Q[None, :])
        carry = accumulate(carry, p_JxQ, p_JxQ * (dp_JxQ - delta_Q[None, :]), q_Qxd, do_Qxd)

        def later(i, carry):  # Query blocks i > j, for which block j is a past block.
            q_Qxd, do_Qxd, lse_Q, delta_Q, s2_JxQ, dp_JxQ = tile(i)
            lmk2_Q, n_JxQ = past_block(s2_JxQ, key_axis=0)
            pi_Q = jnp.exp2(lmk2_Q - lse_Q)
            doo_Q = jnp.sum(n_JxQ * dp_JxQ, axis=0)
            p_JxQ = pi_Q[None, :] * n_JxQ
            ds_JxQ = p_JxQ * (dp_JxQ - doo_Q[None, :])
            ds_JxQ = jnp.where(is_lmk_Jx1, (pi_Q * (doo_Q - delta_Q))[None, :], ds_JxQ)
            return accumulate(carry, p_JxQ, ds_JxQ, q_Qxd, do_Qxd)

        return lax.fori_loop(j + 1, num_blocks, later, carry)

    zeros_Jxd = jnp.zeros(k_Jxd.shape, jnp.float32)
    if group == 1:
        dk_Jxd, dv_Jxd = one_head(0, (zeros_Jxd, zeros_Jxd))
    else:
        dk_Jxd, dv_Jxd = lax.fori_loop(0, group, one_head, (zeros_Jxd, zeros_Jxd))
    dk_ref[...] = (dk_Jxd * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_Jxd.astype(dv_ref.dtype)


def _backward_dq(q, k, v, do, lse, delta, *, block_len, scale, config, interpret):
    """The dq kernel on d-padded inputs: returns dq like q."""
    B, T, H, dp = q.shape
    G = H // k.shape[2]
    p = block_len
    row_spec = pl.BlockSpec((None, p, None, dp), lambda c, b, h: (b, c, h, 0))
    kv_spec = pl.BlockSpec((None, T, None, dp), lambda c, b, h: (b, 0, lax.div(h, G), 0))
    vec_spec = pl.BlockSpec((None, None, p), lambda c, b, h: (b, h, c))
    return pl.pallas_call(
        functools.partial(_landmark_bwd_dq_kernel, scale=scale, precision=dot_precision(q.dtype)),
        grid=(T // p, B, H),
        in_specs=[row_spec, kv_spec, kv_spec, row_spec, vec_spec, vec_spec],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd
        ),
        interpret=interpret,
        name="landmark_bwd_dq",
    )(q, k, v, do, lse, delta)


def _backward_dkv(q, k, v, do, lse, delta, *, block_len, scale, config, interpret):
    """The dK/dV kernel on d-padded inputs: returns dk, dv like k, v."""
    B, T, H, dp = q.shape
    Hkv = k.shape[2]
    G = H // Hkv
    p = block_len
    # Group the query heads by kv head (a free reshape) so one program sees its whole group.
    grp_spec = pl.BlockSpec((None, T, None, G, dp), lambda j, b, hk: (b, 0, hk, 0, 0))
    grp_vec_spec = pl.BlockSpec((None, None, G, T), lambda j, b, hk: (b, hk, 0, 0))
    kblk_spec = pl.BlockSpec((None, p, None, dp), lambda j, b, hk: (b, j, hk, 0))
    return pl.pallas_call(
        functools.partial(
            _landmark_bwd_dkv_kernel, scale=scale, group=G, precision=dot_precision(q.dtype)
        ),
        grid=(T // p, B, Hkv),
        in_specs=[grp_spec, kblk_spec, kblk_spec, grp_spec, grp_vec_spec, grp_vec_spec],
        out_specs=[kblk_spec, kblk_spec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd
        ),
        interpret=interpret,
        name="landmark_bwd_dkv",
    )(
        q.reshape(B, T, Hkv, G, dp),
        k,
        v,
        do.reshape(B, T, Hkv, G, dp),
        lse.reshape(B, Hkv, G, T),
        delta.reshape(B, Hkv, G, T),
    )


def landmark_backward(
    q_BxTxHxdp,
    k_BxTxHkvxdp,
    v_BxTxHkvxdp,
    o_BxTxHxdp,
    lse_BxHxT,
    do_BxTxHxdp,
    *,
    block_len: int,
    scale: float,
    config: LandmarkBlockConfig,
    interpret: bool,
):
    """Gradients (dq, dk, dv) on d-padded inputs from the forward's base-2 logsumexp."""
    delta_BxHxT = jnp.einsum(
        "bthd,bthd->bht", o_BxTxHxdp.astype(jnp.float32), do_BxTxHxdp.astype(jnp.float32)
    )  # rowsum(o * do), f32.
    static = dict(block_len=block_len, scale=scale, config=config, interpret=interpret)
    arrays = (q_BxTxHxdp, k_BxTxHkvxdp, v_BxTxHkvxdp, do_BxTxHxdp, lse_BxHxT, delta_BxHxT)
    dq = _backward_dq(*arrays, **static)
    dk, dv = _backward_dkv(*arrays, **static)
    return dq, dk, dv
