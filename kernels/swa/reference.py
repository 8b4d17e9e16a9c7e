"""Pure-jnp reference for causal sliding-window attention with ALiBi (the spec, docs/spec.md §1.5).

Key j is visible from query i iff ``0 <= i - j <= W`` (``W = -1``: full causal). The logit is
``(q_i . k_j) * scale - slope_h * (i - j)``, followed by a plain softmax over the visible keys.

The computation is blocked so that no (T, T) array ever exists: queries are split into blocks of
``Bq`` rows, and block n (rows ``[n*Bq, n*Bq + Bq)``) attends only to the ``W + Bq`` keys
``[n*Bq - W, n*Bq + Bq)``, gathered from a copy of k/v left-padded by ``W`` rows. Memory is
O(T * (W + Bq)). Full causal attention (or a window that covers the whole sequence) runs a
``lax.map`` over query blocks against all keys, rematerialised so autodiff stores only the inputs.

Softmax and all accumulations are in float32; the output has q's dtype. Autodiff-able; no custom
VJP: its gradient is the oracle for the Pallas backward.
"""

import jax
import jax.numpy as jnp

_DEFAULT_BLOCK_Q = 128


def _attend(
    q_BxNxQxKxGxd, k_BxNxSxKxd, v_BxNxSxKxd, q_pos_NxQ, k_pos_NxS, slopes_KxG, window, scale
):
    """Attention of each query block against its key span (K = Hkv, G = H // Hkv)."""
    s_BxNxKxGxQxS = jnp.einsum(
        "bnqkgd,bnskd->bnkgqs", q_BxNxQxKxGxd, k_BxNxSxKxd, preferred_element_type=jnp.float32
    )
    diff_NxQxS = q_pos_NxQ[:, :, None] - k_pos_NxS[:, None, :]
    bias_KxGxNxQxS = slopes_KxG[:, :, None, None, None] * diff_NxQxS[None, None].astype(jnp.float32)
    s_BxNxKxGxQxS = s_BxNxKxGxQxS * scale - jnp.moveaxis(bias_KxGxNxQxS, 2, 0)[None]
    visible_NxQxS = (diff_NxQxS >= 0) & (k_pos_NxS[:, None, :] >= 0)
    if window >= 0:
        visible_NxQxS &= diff_NxQxS <= window
    visible = visible_NxQxS[None, :, None, None]
    s_BxNxKxGxQxS = jnp.where(visible, s_BxNxKxGxQxS, -jnp.inf)
    p_BxNxKxGxQxS = jax.nn.softmax(s_BxNxKxGxQxS, axis=-1)
    return jnp.einsum("bnkgqs,bnskd->bnqkgd", p_BxNxKxGxQxS, v_BxNxSxKxd.astype(jnp.float32))


def sliding_window_attention_reference(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None = None,
    scale: float | None = None,
    block_q: int = _DEFAULT_BLOCK_Q,
) -> jax.Array:
    """Blocked causal sliding-window attention with ALiBi.

    Args:
      q_BxTxHxd: queries.
      k_BxTxHkvxd: keys, ``H % Hkv == 0``; query head h reads kv head ``h // (H // Hkv)``.
      v_BxTxHkvxd: values.
      window: W; key j visible from query i iff ``0 <= i - j <= W``; -1 means full causal.
      alibi_slopes: (H,) float32 ALiBi slopes, or None for no bias.
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      block_q: query block size Bq (memory is O(T * (W + Bq))).

    Returns:
      (B, T, H, d) in q's dtype.
    """
    B, T, H, d = q_BxTxHxd.shape
    Hkv = k_BxTxHkvxd.shape[2]
    G = H // Hkv
    scale = d**-0.5 if scale is None else scale
    if alibi_slopes is None:
        slopes_KxG = jnp.zeros((Hkv, G), jnp.float32)
    else:
        slopes_KxG = alibi_slopes.astype(jnp.float32).reshape(Hkv, G)
    Bq = min(block_q, T)
    N = -(-T // Bq)
    Tp = N * Bq
    pad_T = ((0, 0), (0, Tp - T), (0, 0), (0, 0))
    q_BxNxQxKxGxd = jnp.pad(q_BxTxHxd, pad_T).reshape(B, N, Bq, Hkv, G, d)
    k_BxTpxKxd = jnp.pad(k_BxTxHkvxd, pad_T)
    v_BxTpxKxd = jnp.pad(v_BxTxHkvxd, pad_T)
    q_pos_NxQ = jnp.arange(Tp, dtype=jnp.int32).reshape(N, Bq)

    if 0 <= window and window + Bq < Tp:
        # Block n needs keys [n*Bq - W, n*Bq + Bq): rows [n*Bq, n*Bq + W + Bq) of the left-padded
        # copy. Padded rows get negative positions and are masked.
        span = window + Bq
        pad_W = ((0, 0), (window, 0), (0, 0), (0, 0))
        k_pad = jnp.pad(k_BxTpxKxd, pad_W)
        v_pad = jnp.pad(v_BxTpxKxd, pad_W)
        starts_N = jnp.arange(N, dtype=jnp.int32) * Bq

        def span_of(x, start):
            return jax.lax.dynamic_slice_in_dim(x, start, span, axis=1)

        k_BxNxSxKxd = jax.vmap(lambda s: span_of(k_pad, s), out_axes=1)(starts_N)
        v_BxNxSxKxd = jax.vmap(lambda s: span_of(v_pad, s), out_axes=1)(starts_N)
        k_pos_NxS = starts_N[:, None] - window + jnp.arange(span, dtype=jnp.int32)[None, :]
        o_BxNxQxKxGxd = _attend(
            q_BxNxQxKxGxd,
            k_BxNxSxKxd,
            v_BxNxSxKxd,
            q_pos_NxQ,
            k_pos_NxS,
            slopes_KxG,
            window,
            scale,
        )
    else:
        k_pos_1xTp = jnp.arange(Tp, dtype=jnp.int32)[None]

        @jax.checkpoint
        def one_block(args):
            q_BxQxKxGxd, q_pos_Q = args
            o = _attend(
                q_BxQxKxGxd[:, None],
                k_BxTpxKxd[:, None],
                v_BxTpxKxd[:, None],
                q_pos_Q[None],
                k_pos_1xTp,
                slopes_KxG,
                window,
                scale,
            )
            return o[:, 0]

        o_NxBxQxKxGxd = jax.lax.map(one_block, (jnp.moveaxis(q_BxNxQxKxGxd, 1, 0), q_pos_NxQ))
        o_BxNxQxKxGxd = jnp.moveaxis(o_NxBxQxKxGxd, 0, 1)
    return o_BxNxQxKxGxd.reshape(B, Tp, H, d)[:, :T].astype(q_BxTxHxd.dtype)


def sliding_window_decode_reference(
    q_BxHxd: jax.Array,
    k_BxNxHkvxd: jax.Array,
    v_BxNxHkvxd: jax.Array,
    key_pos_BxN: jax.Array,
    q_pos_B: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """One query row per batch element against a ring buffer of keys (any slot order).

    Args:
      q_BxHxd: the query row of each batch element.
      k_BxNxHkvxd: cached keys, N slots (N = W + 1 for a full window).
      v_BxNxHkvxd: cached values.
      key_pos_BxN: int32 position of each slot's key; -1 marks an empty slot.
      q_pos_B: int32 position of the query.
      window: W; slot visible iff ``key_pos >= 0`` and ``0 <= q_pos - key_pos <= W`` (-1: no bound).
      alibi_slopes: (H,) float32 slopes, or None.
      scale: logit scale; defaults to ``1 / sqrt(d)``.

    Returns:
      (B, H, d) in q's dtype; a row with no visible key is 0.
    """
    B, H, d = q_BxHxd.shape
    Hkv = k_BxNxHkvxd.shape[2]
    G = H // Hkv
    scale = d**-0.5 if scale is None else scale
    if alibi_slopes is None:
        slopes_KxG = jnp.zeros((Hkv, G), jnp.float32)
    else:
        slopes_KxG = alibi_slopes.astype(jnp.float32).reshape(Hkv, G)
    # Multiply-and-reduce rather than einsum: XLA can fuse each into one reduction that reads the
    # cache once in its (B, N, Hkv, d) layout; a batched matmul over (b, Hkv) of 1-row operands
    # gains nothing from tensor cores. benchmarks/swa.py times both forms side by side.
    q_Bx1xKxGxd = q_BxHxd.reshape(B, 1, Hkv, G, d).astype(jnp.float32)
    k_BxNxKx1xd = k_BxNxHkvxd[:, :, :, None, :].astype(jnp.float32)
    s_BxNxKxG = jnp.sum(q_Bx1xKxGxd * k_BxNxKx1xd, axis=-1) * scale
    diff_BxN = q_pos_B[:, None] - key_pos_BxN
    visible_BxN = (key_pos_BxN >= 0) & (diff_BxN >= 0)
    if window >= 0:
        visible_BxN &= diff_BxN <= window
    bias_BxNxKxG = slopes_KxG[None, None] * diff_BxN[:, :, None, None].astype(jnp.float32)
    s_BxNxKxG = s_BxNxKxG - bias_BxNxKxG
    visible_BxNx1x1 = visible_BxN[:, :, None, None]
    m_Bx1xKxG = jnp.max(jnp.where(visible_BxNx1x1, s_BxNxKxG, -jnp.inf), axis=1, keepdims=True)
    m_Bx1xKxG = jnp.where(jnp.isfinite(m_Bx1xKxG), m_Bx1xKxG, 0.0)
    p_BxNxKxG = jnp.where(visible_BxNx1x1, jnp.exp(s_BxNxKxG - m_Bx1xKxG), 0.0)
    l_BxKxG = jnp.sum(p_BxNxKxG, axis=1)
    v_BxNxKx1xd = v_BxNxHkvxd[:, :, :, None, :].astype(jnp.float32)
    o_BxKxGxd = jnp.sum(p_BxNxKxG[..., None] * v_BxNxKx1xd, axis=1)
    o_BxKxGxd = o_BxKxGxd / jnp.maximum(l_BxKxG, jnp.finfo(jnp.float32).tiny)[..., None]
    return o_BxKxGxd.reshape(B, H, d).astype(q_BxHxd.dtype)
