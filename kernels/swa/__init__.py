"""Causal sliding-window attention with ALiBi: public ops and backend switch (docs/spec.md §1.5).

``sliding_window_attention`` runs the blocked jnp reference (``"xla"``) or the Pallas-Triton
kernels (``"pallas"`` on GPU, ``"interpret"`` on CPU); ``"auto"`` picks Pallas on GPU when the
inputs meet its contract. ``sliding_window_decode`` serves one query row per batch element against
a ring buffer of keys and always runs in XLA.
"""

import jax
import jax.numpy as jnp

from kernels._backend import UnsupportedInputError, resolve_backend
from kernels.swa.reference import (
    sliding_window_attention_reference,
    sliding_window_decode_reference,
)

__all__ = ["sliding_window_attention", "sliding_window_decode"]

# The dtypes the kernels are tested in (CPU interpreter and H200); others run in XLA under "auto".
_PALLAS_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
_PALLAS_MAX_HEAD_DIM = 256


def _check_common(q_shape, kv_shape, head_axis, window, alibi_slopes, dtypes, op):
    """Validates the shape/dtype rules shared by training and decode; returns (H, Hkv)."""
    H, d = q_shape[head_axis], q_shape[-1]
    Hkv, dk = kv_shape[head_axis], kv_shape[-1]
    if d != dk:
        raise UnsupportedInputError(f"{op}: head dims differ: q has d={d}, k/v have d={dk}")
    if Hkv == 0 or H % Hkv:
        raise UnsupportedInputError(
            f"{op}: query heads H={H} must be a multiple of kv heads {Hkv=}"
        )
    if len(set(dtypes)) != 1 or not jnp.issubdtype(dtypes[0], jnp.floating):
        raise UnsupportedInputError(f"{op}: q, k, v must share one float dtype, got {dtypes}")
    if not isinstance(window, int) or window < -1:
        raise UnsupportedInputError(f"{op}: {window=} must be an int >= 0, or -1 for full causal")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (H,):
        raise UnsupportedInputError(
            f"{op}: alibi_slopes must have shape (H,)=({H},), got {tuple(alibi_slopes.shape)}"
        )
    return H, Hkv


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
    if q_BxTxHxd.ndim != 4 or k_BxTxHkvxd.ndim != 4 or k_BxTxHkvxd.shape != v_BxTxHkvxd.shape:
        raise UnsupportedInputError(
            f"{op}: expected q (B, T, H, d) and k, v (B, T, Hkv, d) of one shape, got "
            f"{q_BxTxHxd.shape}, {k_BxTxHkvxd.shape}, {v_BxTxHkvxd.shape}"
        )
    if q_BxTxHxd.shape[:2] != k_BxTxHkvxd.shape[:2]:
        raise UnsupportedInputError(
            f"{op}: q and k/v must share (B, T), got {q_BxTxHxd.shape[:2]} and "
            f"{k_BxTxHkvxd.shape[:2]}"
        )
    dtypes = (q_BxTxHxd.dtype, k_BxTxHkvxd.dtype, v_BxTxHkvxd.dtype)
    _check_common(q_BxTxHxd.shape, k_BxTxHkvxd.shape, 2, window, alibi_slopes, dtypes, op)
    d = q_BxTxHxd.shape[-1]
    reasons = []
    if jnp.dtype(q_BxTxHxd.dtype) not in _PALLAS_DTYPES:
        reasons.append(f"dtype {q_BxTxHxd.dtype} not in {_PALLAS_DTYPES}")
    if d > _PALLAS_MAX_HEAD_DIM:
        reasons.append(f"head dim d={d} > {_PALLAS_MAX_HEAD_DIM}")
    chosen = resolve_backend(op, backend, pallas_supported=not reasons, reason="; ".join(reasons))
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
    B = q_BxHxd.shape[0]
    if (
        q_BxHxd.ndim != 3
        or k_BxNxHkvxd.ndim != 4
        or k_BxNxHkvxd.shape != v_BxNxHkvxd.shape
        or k_BxNxHkvxd.shape[0] != B
        or tuple(key_pos_BxN.shape) != tuple(k_BxNxHkvxd.shape[:2])
        or tuple(q_pos_B.shape) != (B,)
    ):
        raise UnsupportedInputError(
            f"{op}: expected q (B, H, d), k/v (B, N, Hkv, d), key_pos (B, N), q_pos (B,), got "
            f"{q_BxHxd.shape}, {k_BxNxHkvxd.shape}, {v_BxNxHkvxd.shape}, {key_pos_BxN.shape}, "
            f"{q_pos_B.shape}"
        )
    if not (
        jnp.issubdtype(key_pos_BxN.dtype, jnp.integer)
        and jnp.issubdtype(q_pos_B.dtype, jnp.integer)
    ):
        raise UnsupportedInputError(
            f"{op}: key_pos and q_pos must be integers, got {key_pos_BxN.dtype}, {q_pos_B.dtype}"
        )
    dtypes = (q_BxHxd.dtype, k_BxNxHkvxd.dtype, v_BxNxHkvxd.dtype)
    _check_common(q_BxHxd.shape, k_BxNxHkvxd.shape, -2, window, alibi_slopes, dtypes, op)
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
