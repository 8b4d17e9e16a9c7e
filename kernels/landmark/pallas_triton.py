"""Grouped-softmax landmark attention in Pallas with Triton lowering: forward and VJP.

Contract:
  - q (B, T, H, d), k/v (B, T, Hkv, d), ``H % Hkv == 0``; dtype bf16 or f32 (one dtype; the caller
    rejects others). Dots accumulate in f32 (f32 inputs use IEEE f32 dots, not TF32); softmaxes
    are f32.
  - P = ``block_len`` is a power of two in [16, 128] and divides T; slot P - 1 of every block is
    its landmark (the caller inserts landmarks so; nothing here reads token ids).
  - Any d <= 256: d is zero-padded to a power of two >= 16 (Triton tiles are powers of two, and
    ``tl.dot`` needs K >= 16).

Layout (FlashAttention-2 style, one query tile and one key tile per landmark block): the forward
grid is (C, B, H); program c loops over the past key blocks j < c, then the diagonal block. For a
past block the landmark column gives the top-level logit, which alone drives the online
max/normaliser, and an in-tile softmax over the block's other P - 1 keys gives the mixture the
landmark's share multiplies: ``acc = acc * alpha + exp2(lmk - m) * softmax_in(s) V``. The diagonal
block is an ordinary causal softmax with the own landmark masked (also for the landmark's own
query). Work is that of full causal attention, O(T^2 d), plus an in-tile softmax per tile; no
(T, T) array exists. The forward saves only the top-level base-2 logsumexp (B, H, T); the in-tile
normalisers are recomputed from each tile in the backward (kernels/landmark/pallas_triton_vjp.py).

Letters besides the glossary's: dp padded d; Q query rows and J key rows of one tile (both P).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.landmark import pallas_triton_vjp as vjp
from kernels.landmark._common import (
    LOG2_E,
    M_INIT,
    MIN_BLOCK,
    LandmarkBlockConfig,
    diagonal_mask,
    dot_precision,
    past_block,
)


def _landmark_fwd_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, *, scale, precision):
    """One query block (one landmark block) of one (batch, head).

    Refs: q/o (Q, dp); k/v (T, dp) of this (batch, kv head); lse (Q,) base 2.
    """
    p = q_ref.shape[0]
    c = pl.program_id(0)
    c2 = scale * LOG2_E
    q_Qxd = q_ref[...]

    def past(j, carry):
        acc_Qxd, m_Q, l_Q = carry
        k_Jxd = k_ref[pl.ds(j * p, p), :]
        v_Jxd = v_ref[pl.ds(j * p, p), :]
        s2_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision) * c2
        lmk2_Q, n_QxJ = past_block(s2_QxJ, key_axis=1)
        m_new_Q = jnp.maximum(m_Q, lmk2_Q)
        alpha_Q = jnp.exp2(m_Q - m_new_Q)
        w_Q = jnp.exp2(lmk2_Q - m_new_Q)
        l_Q = l_Q * alpha_Q + w_Q
        pv_Qxd = plt.dot((w_Q[:, None] * n_QxJ).astype(v_Jxd.dtype), v_Jxd, precision=precision)
        return acc_Qxd * alpha_Q[:, None] + pv_Qxd, m_new_Q, l_Q

    init = (
        jnp.zeros(q_Qxd.shape, jnp.float32),
        jnp.full((p,), M_INIT, jnp.float32),
        jnp.zeros((p,), jnp.float32),
    )
    acc_Qxd, m_Q, l_Q = lax.fori_loop(0, c, past, init)
    k_Jxd = k_ref[pl.ds(c * p, p), :]
    v_Jxd = v_ref[pl.ds(c * p, p), :]
    s2_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision) * c2
    s2_QxJ = jnp.where(diagonal_mask(p), s2_QxJ, -jnp.inf)
    m_new_Q = jnp.maximum(m_Q, jnp.max(s2_QxJ, axis=1))
    alpha_Q = jnp.exp2(m_Q - m_new_Q)
    p_QxJ = jnp.exp2(s2_QxJ - m_new_Q[:, None])
    l_Q = l_Q * alpha_Q + jnp.sum(p_QxJ, axis=1)
    acc_Qxd = acc_Qxd * alpha_Q[:, None] + plt.dot(
        p_QxJ.astype(v_Jxd.dtype), v_Jxd, precision=precision
    )
    # Every row sees its block's slot 0, so l >= 1.
    lse_ref[...] = m_new_Q + jnp.log2(l_Q)
    o_ref[...] = (acc_Qxd / l_Q[:, None]).astype(o_ref.dtype)


def landmark_forward(
    q_BxTxHxdp, k_BxTxHkvxdp, v_BxTxHkvxdp, *, block_len, scale, config, interpret
):
    """Forward pallas_call on d-padded inputs; returns (o like q, lse (B, H, T) base-2 f32)."""
    B, T, H, dp = q_BxTxHxdp.shape
    G = H // k_BxTxHkvxdp.shape[2]
    p = block_len
    kernel = functools.partial(
        _landmark_fwd_kernel, scale=scale, precision=dot_precision(q_BxTxHxdp.dtype)
    )
    row_spec = pl.BlockSpec((None, p, None, dp), lambda c, b, h: (b, c, h, 0))
    kv_spec = pl.BlockSpec((None, T, None, dp), lambda c, b, h: (b, 0, lax.div(h, G), 0))
    return pl.pallas_call(
        kernel,
        grid=(T // p, B, H),
        in_specs=[row_spec, kv_spec, kv_spec],
        out_specs=[row_spec, pl.BlockSpec((None, None, p), lambda c, b, h: (b, h, c))],
        out_shape=[
            jax.ShapeDtypeStruct(q_BxTxHxdp.shape, q_BxTxHxdp.dtype),
            jax.ShapeDtypeStruct((B, H, T), jnp.float32),
        ],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        ),
        interpret=interpret,
        name="landmark_fwd",
    )(q_BxTxHxdp, k_BxTxHkvxdp, v_BxTxHkvxdp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _landmark(q, k, v, block_len, scale, config, interpret):
    """Landmark attention on d-padded inputs (shared by "pallas" and "interpret")."""
    static = dict(block_len=block_len, scale=scale, config=config, interpret=interpret)
    return landmark_forward(q, k, v, **static)[0]


def _landmark_vjp_fwd(q, k, v, block_len, scale, config, interpret):
    static = dict(block_len=block_len, scale=scale, config=config, interpret=interpret)
    o, lse = landmark_forward(q, k, v, **static)
    return o, (q, k, v, o, lse)


def _landmark_vjp_bwd(block_len, scale, config, interpret, residuals, do):
    q, k, v, o, lse = residuals
    static = dict(block_len=block_len, scale=scale, config=config, interpret=interpret)
    return vjp.landmark_backward(q, k, v, o, lse, do, **static)


_landmark.defvjp(_landmark_vjp_fwd, _landmark_vjp_bwd)


def landmark_attention_pallas(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    block_len: int,
    scale: float | None = None,
    config: LandmarkBlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Pads d, runs the Pallas kernels, slices back. Inputs are validated by the caller.

    Args:
      q_BxTxHxd: queries (RoPE applied).
      k_BxTxHkvxd: keys (RoPE applied).
      v_BxTxHkvxd: values.
      block_len: P, a power of two in [16, 128] dividing T.
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      config: launch parameters; defaults to ``LandmarkBlockConfig.default(P, d)``.
      interpret: run the kernels in the Pallas interpreter (CPU tests).

    Returns:
      (B, T, H, d) in q's dtype.
    """
    d = q_BxTxHxd.shape[-1]
    scale = float(d**-0.5 if scale is None else scale)
    config = LandmarkBlockConfig.default(block_len, d) if config is None else config
    d_pad = max(MIN_BLOCK, pl.next_power_of_2(d))
    pad = ((0, 0), (0, 0), (0, 0), (0, d_pad - d))
    q, k, v = (jnp.pad(x, pad) for x in (q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd))
    return _landmark(q, k, v, block_len, scale, config, interpret)[..., :d]
