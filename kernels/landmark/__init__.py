"""Grouped-softmax landmark attention: public op and backend switch (docs/architecture.md).

``landmark_attention`` runs the jnp reference (``"xla"``) or the Pallas-Triton kernels
(``"pallas"`` on GPU, ``"interpret"`` on CPU); ``"auto"`` picks Pallas on GPU when the inputs meet
its contract.
"""

import jax
import jax.numpy as jnp

from kernels._backend import UnsupportedInputError, resolve_backend
from kernels._validation import check_qkv
from kernels.landmark._common import MAX_BLOCK, MIN_BLOCK
from kernels.landmark.reference import landmark_attention_reference

__all__ = ["landmark_attention"]

# The dtypes the kernels are tested in (CPU interpreter); others run in XLA under "auto".
_PALLAS_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
_PALLAS_MAX_HEAD_DIM = 256
# Tiles the kernels' shared memory holds, measured on an H200 (227 KiB per block): P = 128 with
# d = 128 asked for 256 KiB in bfloat16 and float32 alike; P = 128 with d = 64 fits in bfloat16,
# not in float32; P = 64 fits with d up to 128 in both.
_PALLAS_MAX_TILE = 8192  # P x d
_PALLAS_MAX_BLOCK_F32 = 64


def _pallas_support(q: jax.Array, block_len: int) -> str:
    """Why the Pallas-Triton kernels cannot take these inputs, or ""."""
    reasons = []
    if jnp.dtype(q.dtype) not in _PALLAS_DTYPES:
        reasons.append(f"dtype {q.dtype} not in {_PALLAS_DTYPES}")
    if q.shape[-1] > _PALLAS_MAX_HEAD_DIM:
        reasons.append(f"head dim d={q.shape[-1]} > {_PALLAS_MAX_HEAD_DIM}")
    if not MIN_BLOCK <= block_len <= MAX_BLOCK or block_len & (block_len - 1):
        reasons.append(f"{block_len=} is not a power of two in [{MIN_BLOCK}, {MAX_BLOCK}]")
    if block_len * q.shape[-1] > _PALLAS_MAX_TILE:
        reasons.append(
            f"block_len x d = {block_len} x {q.shape[-1]} > {_PALLAS_MAX_TILE} (shared memory)"
        )
    if jnp.dtype(q.dtype).itemsize > 2 and block_len > _PALLAS_MAX_BLOCK_F32:
        reasons.append(
            f"{block_len=} > {_PALLAS_MAX_BLOCK_F32} in {q.dtype} (shared memory); use bfloat16"
        )
    return "; ".join(reasons)


def landmark_attention(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    block_len: int,
    scale: float | None = None,
    backend: str = "auto",
) -> jax.Array:
    """Grouped-softmax landmark attention (Landmark Attention, Mohtashami & Jaggi 2023).

    The sequence is C = T / P blocks of P = ``block_len`` positions aligned to its start; slot
    P - 1 of every block is its landmark. Query i attends causally to the non-landmark keys of
    its own block and, through each past block's landmark logit in one top-level softmax, to an
    in-block softmax over that block's other P - 1 keys; landmarks carry no value weight. The
    formulas are in kernels/landmark/reference.py. Softmax runs in float32. Differentiable in
    q, k and v.

    Args:
      q_BxTxHxd: queries with RoPE applied by the caller; any float dtype for XLA, bf16 or f32
        for Pallas.
      k_BxTxHkvxd: keys with RoPE applied, same dtype, ``H % Hkv == 0``; query head h reads kv
        head ``h // (H // Hkv)``.
      v_BxTxHkvxd: values, same shape and dtype as the keys.
      block_len: P >= 2 dividing T; Pallas needs a power of two in [16, 128] with P x d <= 8192
        (P <= 64 in float32).
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      backend: ``"auto"`` (Pallas on GPU when supported, else XLA), ``"xla"``, ``"pallas"`` or
        ``"interpret"``.

    Returns:
      (B, T, H, d) in q's dtype.

    Raises:
      UnsupportedInputError: shapes, dtypes or block_len violate the contract, or an explicitly
        requested Pallas backend cannot take these inputs.
    """
    op = "landmark_attention"
    check_qkv(op, q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, q_axes="B, T, H, d", kv_axes="B, T, Hkv, d")
    T = q_BxTxHxd.shape[1]
    if q_BxTxHxd.shape[:2] != k_BxTxHkvxd.shape[:2]:
        raise UnsupportedInputError(
            f"{op}: q and k/v must share (B, T), got {q_BxTxHxd.shape[:2]} and "
            f"{k_BxTxHkvxd.shape[:2]}"
        )
    if not isinstance(block_len, int) or block_len < 2 or T % block_len:
        raise UnsupportedInputError(f"{op}: {block_len=} must be an int >= 2 dividing {T=}")
    why = _pallas_support(q_BxTxHxd, block_len)
    chosen = resolve_backend(op, backend, pallas_supported=not why, reason=why)
    if chosen == "xla":
        return landmark_attention_reference(
            q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, block_len=block_len, scale=scale
        )
    from kernels.landmark import pallas_triton  # Guarded: Triton imports stay off the CPU path.

    return pallas_triton.landmark_attention_pallas(
        q_BxTxHxd,
        k_BxTxHkvxd,
        v_BxTxHkvxd,
        block_len=block_len,
        scale=scale,
        interpret=chosen == "interpret",
    )
