"""Causal sliding-window attention with ALiBi: public ops and backend switch (docs/spec.md §1.5).

``sliding_window_attention`` runs the blocked jnp reference (``"xla"``) or the Pallas-Triton
kernels (``"pallas"`` on GPU, ``"interpret"`` on CPU); ``"auto"`` picks Pallas on GPU when the
inputs meet its contract. ``sliding_window_decode`` serves one query row per batch element against
a ring buffer of keys and always runs in XLA.
"""

import jax
import jax.numpy as jnp

from kernels._backend import UnsupportedInputError, resolve_backend
from kernels._validation import check_qkv
from kernels.swa.reference import (
    sliding_window_attention_reference,
    sliding_window_decode_reference,
)

__all__ = ["sliding_window_attention", "sliding_window_decode"]

# The dtypes the kernels are tested in (CPU interpreter and H200); others run in XLA under "auto".
_PALLAS_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
_PALLAS_MAX_HEAD_DIM = 256


def _check_window_and_slopes(op: str, window, alibi_slopes, num_heads: int) -> None:
    """Raises UnsupportedInputError unless window is W >= 0 or -1 and the slopes are (H,)."""
    if not isinstance(window, int) or window < -1:
        raise UnsupportedInputError(f"{op}: {window=} must be an int >= 0, or -1 for full causal")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (num_heads,):
        raise UnsupportedInputError(
            f"{op}: alibi_slopes must have shape (H,)=({num_heads},), got "
            f"{tuple(alibi_slopes.shape)}"
        )


def _pallas_support(q: jax.Array) -> str:
    """Why the Pallas-Triton kernels cannot take these inputs, or ""."""
    reasons = []
    if jnp.dtype(q.dtype) not in _PALLAS_DTYPES:
        reasons.append(f"dtype {q.dtype} not in {_PALLAS_DTYPES}")
    if q.shape[-1] > _PALLAS_MAX_HEAD_DIM:
        reasons.append(f"head dim d={q.shape[-1]} > {_PALLAS_MAX_HEAD_DIM}")
    return "; ".join(reasons)


def sliding_window_attention(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None,
    scale: float | None = None,
    backend: str = "auto",
) -> jax.Array:
    """Causal sliding-window attention with ALiBi, ``softmax(q k^T * scale - slope * (i - j)) v``.

    Key j is visible from query i iff ``0 <= i - j <= window``. Query head h reads kv head
    ``h // (H // Hkv)``. Softmax runs in float32. Differentiable in q, k and v (not in the slopes).

    Args:
      q_BxTxHxd: queries; any float dtype for XLA, bf16 or f32 for Pallas.
      k_BxTxHkvxd: keys, same dtype, ``H % Hkv == 0``.
      v_BxTxHkvxd: values, same shape and dtype as the keys.
      window: W >= 0, or -1 for full causal attention.
      alibi_slopes: (H,) float32 slopes, or None for no positional bias.
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      backend: ``"auto"`` (Pallas on GPU when supported, else XLA), ``"xla"``, ``"pallas"`` or
        ``"interpret"``.

    Returns:
      (B, T, H, d) in q's dtype.

    Raises:
      UnsupportedInputError: shapes, dtypes or window violate the contract, or an explicitly
        requested Pallas backend cannot take these inputs.
    """
    op = "sliding_window_attention"
    check_qkv(op, q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, q_axes="B, T, H, d", kv_axes="B, T, Hkv, d")
    if q_BxTxHxd.shape[:2] != k_BxTxHkvxd.shape[:2]:
        raise UnsupportedInputError(
            f"{op}: q and k/v must share (B, T), got {q_BxTxHxd.shape[:2]} and "
            f"{k_BxTxHkvxd.shape[:2]}"
        )
    _check_window_and_slopes(op, window, alibi_slopes, q_BxTxHxd.shape[2])
    why = _pallas_support(q_BxTxHxd)
    chosen = resolve_backend(op, backend, pallas_supported=not why, reason=why)
    if chosen == "xla":
        return sliding_window_attention_reference(
            q_BxTxHxd,
            k_BxTxHkvxd,
            v_BxTxHkvxd,
            window=window,
            alibi_slopes=alibi_slopes,
            scale=scale,
        )
    from kernels.swa import pallas_triton  # Guarded: Triton imports stay off the CPU path.

    return pallas_triton.sliding_window_attention_pallas(
        q_BxTxHxd,
        k_BxTxHkvxd,
        v_BxTxHkvxd,
        window=window,
        alibi_slopes=alibi_slopes,
        scale=scale,
        interpret=chosen == "interpret",
    )


def sliding_window_decode(
    q_BxHxd: jax.Array,
    k_BxNxHkvxd: jax.Array,
    v_BxNxHkvxd: jax.Array,
    key_pos_BxN: jax.Array,
    q_pos_B: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None,
    scale: float | None = None,
) -> jax.Array:
    """One decode step of sliding-window attention against a ring buffer (XLA).

    The buffer holds N slots (N = W + 1 for a full window) in any order; slot n holds the key at
    position ``key_pos_BxN[b, n]`` or is empty (-1). A slot is visible iff ``key_pos >= 0`` and
    ``0 <= q_pos - key_pos <= window``; logits as in ``sliding_window_attention``.

    Args:
      q_BxHxd: one query row per batch element.
      k_BxNxHkvxd: cached keys, same dtype as q.
      v_BxNxHkvxd: cached values.
      key_pos_BxN: int32 key positions, -1 for empty slots.
      q_pos_B: int32 query positions.
      window: W >= 0, or -1 for no window bound.
      alibi_slopes: (H,) float32 slopes, or None.
      scale: logit scale; defaults to ``1 / sqrt(d)``.

    Returns:
      (B, H, d) in q's dtype (0 where no slot is visible).

    Raises:
      UnsupportedInputError: shapes, dtypes or window violate the contract.
    """
    op = "sliding_window_decode"
    check_qkv(op, q_BxHxd, k_BxNxHkvxd, v_BxNxHkvxd, q_axes="B, H, d", kv_axes="B, N, Hkv, d")
    B = q_BxHxd.shape[0]
    if tuple(key_pos_BxN.shape) != tuple(k_BxNxHkvxd.shape[:2]) or tuple(q_pos_B.shape) != (B,):
        raise UnsupportedInputError(
            f"{op}: expected key_pos (B, N) = {tuple(k_BxNxHkvxd.shape[:2])} and q_pos (B,) = "
            f"({B},), got {key_pos_BxN.shape} and {q_pos_B.shape}"
        )
    if not (
        jnp.issubdtype(key_pos_BxN.dtype, jnp.integer)
        and jnp.issubdtype(q_pos_B.dtype, jnp.integer)
    ):
        raise UnsupportedInputError(
            f"{op}: key_pos and q_pos must be integers, got {key_pos_BxN.dtype}, {q_pos_B.dtype}"
        )
    _check_window_and_slopes(op, window, alibi_slopes, q_BxHxd.shape[1])
    return sliding_window_decode_reference(
        q_BxHxd,
        k_BxNxHkvxd,
        v_BxNxHkvxd,
        key_pos_BxN.astype(jnp.int32),
        q_pos_B.astype(jnp.int32),
        window=window,
        alibi_slopes=alibi_slopes,
        scale=scale,
    )
