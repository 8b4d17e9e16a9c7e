"""Causal sliding-window attention with ALiBi in Pallas with Triton lowering: forward and VJP.

Contract:
  - q (B, T, H, d), k/v (B, T, Hkv, d), ``H % Hkv == 0``; dtype bf16 or f32 (one dtype; the caller
    rejects others).
    Dots accumulate in f32 (f32 inputs use IEEE f32 dots, not TF32); softmax is f32.
  - Any T: T is zero-padded to a multiple of the largest block and sliced back. Padded query rows
    see themselves and are discarded; real queries never see padded keys (they lie in the future).
  - Any d <= 256: d is zero-padded to a power of two >= 16 (Triton tiles are powers of two, and
    ``tl.dot`` needs K >= 16). Run on an H200 with d = 48 and 64; d = 128 passes the CPU-side
    CUDA lowering check only.
  - Block sizes are powers of two >= 16 (``SwaBlockConfig``, kernels/swa/_common.py, static);
    larger blocks are clamped to the padded sequence length so tiny sequences do not pay for
    128-row tiles.
  - ``window = -1`` is full causal; ``window >= 0`` restricts each query to the ``window + 1`` most
    recent keys.

Layout: the kernels read q/k/v in their (B, T, H, d) layout (no transposes); batch and head are
grid axes. The forward grid is (T / Bq, B, H); each program loops over only the key blocks that
intersect its band ``[q_start - W, q_start + Bq)``, so work is O(T * W). Each band is split into
three ranges: the left edge and the diagonal need the window/causal mask; the middle does not.
The mask and the ALiBi bias are computed in registers from block offsets: no (T, T) array and no
bias tensor exists. The softmax runs in base 2 (``exp2``), with log2(e) folded into scale and
slope.

Backward (kernels/swa/pallas_triton_vjp.py, FlashAttention-2 style): ``delta = rowsum(o * do)``
in XLA, then the dq and the dK/dV kernel. The forward saves only the base-2 logsumexp (B, H, Tp)
besides its inputs and output.

Letters besides the glossary's: Tp padded T, dp padded d, Hp padded H; Q query rows and J key rows
of one tile.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.swa import pallas_triton_vjp as vjp
from kernels.swa._common import (
    LOG2_E,
    M_INIT,
    MIN_BLOCK,
    SwaBlockConfig,
    band,
    dot_precision,
    logits2,
    three_loops,
)


def _swa_fwd_kernel(
    q_ref, k_ref, v_ref, slopes_ref, o_ref, lse_ref, *, window, scale, block_k, precision
):
    """One query block of one (batch, head): online softmax over the key band.

    Refs: q/o (Q, dp); k/v (Tp, dp) of this (batch, kv head); slopes (Hp,); lse (Q,) base 2.
    """
    block_q = q_ref.shape[0]
    q_start = pl.program_id(0) * block_q
    slope2 = slopes_ref[pl.program_id(2)] * LOG2_E
    c2 = scale * LOG2_E
    n_k = k_ref.shape[0] // block_k
    q_Qxd = q_ref[...]
    q_iota_Q = jnp.arange(block_q, dtype=jnp.int32)
    k_pos_J = jnp.arange(block_k, dtype=jnp.int32)

    def body(j, carry, masked):
        acc_Qxd, m_Q, row_sum_Q = carry
        k_start = j * block_k
        k_Jxd = k_ref[pl.ds(k_start, block_k), :]
        v_Jxd = v_ref[pl.ds(k_start, block_k), :]
        s_QxJ = plt.dot(q_Qxd, k_Jxd, trans_b=True, precision=precision)
        s_QxJ = logits2(s_QxJ, q_iota_Q + (q_start - k_start), k_pos_J, slope2, c2, window, masked)
        m_new_Q = jnp.maximum(m_Q, jnp.max(s_QxJ, axis=1))
        alpha_Q = jnp.exp2(m_Q - m_new_Q)
        p_QxJ = jnp.exp2(s_QxJ - m_new_Q[:, None])
        row_sum_Q = row_sum_Q * alpha_Q + jnp.sum(p_QxJ, axis=1)
        acc_Qxd = acc_Qxd * alpha_Q[:, None] + plt.dot(
            p_QxJ.astype(v_Jxd.dtype), v_Jxd, precision=precision
        )
        return acc_Qxd, m_new_Q, row_sum_Q

    acc_Qxd = jnp.zeros(q_Qxd.shape, jnp.float32)
    m_Q = jnp.full((block_q,), M_INIT, jnp.float32)
    row_sum_Q = jnp.zeros((block_q,), jnp.float32)
    lo, b, c, hi = band(q_start, block_q, block_k, window, n_k, rows_are_q=True)
    acc_Qxd, m_Q, row_sum_Q = three_loops(lo, b, c, hi, body, (acc_Qxd, m_Q, row_sum_Q))
    # Every row sees at least itself, so row_sum >= 1.
    lse_ref[...] = m_Q + jnp.log2(row_sum_Q)
    o_ref[...] = (acc_Qxd / row_sum_Q[:, None]).astype(o_ref.dtype)


def swa_forward(
    q_BxTpxHxdp,
    k_BxTpxHkvxdp,
    v_BxTpxHkvxdp,
    slopes_Hp,
    *,
    window: int,
    scale: float,
    config: SwaBlockConfig,
    interpret: bool,
):
    """Forward pallas_call on padded inputs; returns (o like q, lse (B, H, Tp) base-2 f32)."""
    B, Tp, H, dp = q_BxTpxHxdp.shape
    Hkv = k_BxTpxHkvxdp.shape[2]
    G = H // Hkv
    bq = config.block_q
    kernel = functools.partial(
        _swa_fwd_kernel,
        window=window,
        scale=scale,
        block_k=config.block_k,
        precision=dot_precision(q_BxTpxHxdp.dtype),
    )
    return pl.pallas_call(
        kernel,
        grid=(Tp // bq, B, H),
        in_specs=[
            pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0)),
            pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
            pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
            pl.BlockSpec(slopes_Hp.shape, lambda i, b, h: (0,)),
        ],
        out_specs=[
            pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0)),
            pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q_BxTpxHxdp.shape, q_BxTpxHxdp.dtype),
            jax.ShapeDtypeStruct((B, H, Tp), jnp.float32),
        ],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        ),
        interpret=interpret,
        name="swa_fwd",
    )(q_BxTpxHxdp, k_BxTpxHkvxdp, v_BxTpxHkvxdp, slopes_Hp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _swa(q, k, v, slopes, window, scale, config, interpret):
    """SWA on padded inputs (shared by "pallas" and "interpret"); arrays as in swa_forward."""
    static = dict(window=window, scale=scale, config=config, interpret=interpret)
    return swa_forward(q, k, v, slopes, **static)[0]


def _swa_vjp_fwd(q, k, v, slopes, window, scale, config, interpret):
    static = dict(window=window, scale=scale, config=config, interpret=interpret)
    o, lse = swa_forward(q, k, v, slopes, **static)
    return o, (q, k, v, slopes, o, lse)


def _swa_vjp_bwd(window, scale, config, interpret, residuals, do):
    q, k, v, slopes, o, lse = residuals
    static = dict(window=window, scale=scale, config=config, interpret=interpret)
    dq, dk, dv = vjp.swa_backward(q, k, v, slopes, o, lse, do, **static)
    return dq, dk, dv, jnp.zeros_like(slopes)  # Slopes are constants.


_swa.defvjp(_swa_vjp_fwd, _swa_vjp_bwd)


def sliding_window_attention_pallas(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None,
    scale: float | None = None,
    config: SwaBlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Pads T and d, runs the Pallas kernels, slices back. Inputs are validated by the caller.

    Args:
      q_BxTxHxd: queries.
      k_BxTxHkvxd: keys.
      v_BxTxHkvxd: values.
      window: W >= 0, or -1 for full causal.
      alibi_slopes: (H,) slopes or None.
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      config: block sizes; defaults to ``SwaBlockConfig.default(T, d, window)``.
      interpret: run the kernels in the Pallas interpreter (CPU tests).

    Returns:
      (B, T, H, d) in q's dtype.
    """
    B, T, H, d = q_BxTxHxd.shape
    scale = float(d**-0.5 if scale is None else scale)
    config = SwaBlockConfig.default(T, d, window) if config is None else config
    t_pad = -(-T // config.max_block) * config.max_block
    config = config.clamped(t_pad)
    d_pad = max(MIN_BLOCK, pl.next_power_of_2(d))
    pad = ((0, 0), (0, t_pad - T), (0, 0), (0, d_pad - d))
    q_BxTpxHxdp, k_BxTpxHkvxdp, v_BxTpxHkvxdp = (
        jnp.pad(x, pad) for x in (q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd)
    )
    h_pad = pl.next_power_of_2(H)
    if alibi_slopes is None:
        slopes_Hp = jnp.zeros((h_pad,), jnp.float32)
    else:
        slopes_Hp = jnp.pad(alibi_slopes.astype(jnp.float32), (0, h_pad - H))
    o_BxTpxHxdp = _swa(
        q_BxTpxHxdp, k_BxTpxHkvxdp, v_BxTpxHkvxdp, slopes_Hp, window, scale, config, interpret
    )
    return o_BxTpxHxdp[:, :T, :, :d]
