"""Grouped Cross Attention (GCA): public ops with a backend switch.

``gca_attention`` (training and full-sequence evaluation) and ``gca_decode`` (inference, forward
only). Contract (docs/architecture.md, "Contracts"):

    out[b, c] = sum_k w[b, c, k] * softmax_j(q[b, c] @ keys[b, idx[b, c, k]].T * scale)
                                  @ values[b, idx[b, c, k]]

Backends: ``"xla"`` (kernels/gca/reference.py, ground truth), ``"pallas"`` (Pallas-Triton, GPU),
``"interpret"`` (the same Pallas kernels on CPU), ``"auto"`` (pallas on GPU when supported).
"""

import math

import jax
import jax.numpy as jnp

from kernels._backend import UnsupportedInputError, resolve_backend
from kernels.gca import reference

__all__ = ["gca_attention", "gca_decode"]

_KERNEL_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _kernel_support(
    dtype, slots: int, head_dim: int, scale: float, slab_elements: int
) -> tuple[bool, str]:
    """Whether the Pallas-Triton kernels take these sizes (power-of-2 tiles, tensor-core dots)."""
    if slab_elements >= 2**31:
        # Each program indexes one batch element's whole q or memory slab: keep offsets in int32.
        return False, f"one batch element's q or memory has {slab_elements} >= 2**31 elements"
    if not scale > 0:
        return False, f"{scale=} must be positive"
    if jnp.dtype(dtype) not in [jnp.dtype(t) for t in _KERNEL_DTYPES]:
        return False, f"dtype {jnp.dtype(dtype)} not in float32/bfloat16/float16"
    if not (_is_pow2(slots) and 16 <= slots <= 128):
        return False, f"slots per chunk S={slots} must be a power of 2 in [16, 128]"
    if not (_is_pow2(head_dim) and 16 <= head_dim <= 256):
        return False, f"head dim d={head_dim} must be a power of 2 in [16, 256]"
    return True, ""


def _check_qkv(op: str, q_shape, k_shape, v_shape, q_dtype, k_dtype, v_dtype) -> None:
    """Raises UnsupportedInputError unless q/keys/values agree on dtype, batch, d and GQA groups."""
    if k_shape != v_shape:
        raise UnsupportedInputError(f"{op}: keys shape {k_shape} != values shape {v_shape}")
    if not (q_dtype == k_dtype == v_dtype):
        raise UnsupportedInputError(
            f"{op}: q, keys and values must share a dtype, got {q_dtype}, {k_dtype}, {v_dtype}"
        )
    if q_shape[0] != k_shape[0]:
        raise UnsupportedInputError(f"{op}: batch of q {q_shape} != batch of keys {k_shape}")
    h, d = q_shape[-2:]
    hkv, dk = k_shape[-2:]
    if d != dk:
        raise UnsupportedInputError(f"{op}: head dim of q ({d}) != head dim of keys ({dk})")
    if h % hkv:
        raise UnsupportedInputError(f"{op}: query heads H={h} must be a multiple of Hkv={hkv}")


def gca_attention(
    q_BxCxPxHxd: jax.Array,
    keys_BxExSxHkvxd: jax.Array,
    values_BxExSxHkvxd: jax.Array,
    idx_BxCxK: jax.Array,
    w_BxCxK: jax.Array,
    *,
    scale: float,
    backend: str = "auto",
) -> jax.Array:
    """Grouped Cross Attention of each query chunk over its K retrieved memory chunks.

    One softmax per retrieved chunk over its S slots (no masking inside a chunk), in float32; the
    K per-chunk outputs are summed with weights w in float32 (docs/spec.md §2.2). Differentiable in
    q, keys, values and w. Padding slots (w = 0) may hold any index in [0, E); duplicates are
    allowed. The Pallas backends read retrieved chunks by index inside the kernel, never
    materialising the gathered (B, C, K, S, H, d) tensor, forward or backward.

    Args:
      q_BxCxPxHxd: queries, any P >= 1 rows per chunk (64 or 65 in DRT).
      keys_BxExSxHkvxd: chunk memory keys (S = P' = 64 slots), H % Hkv == 0.
      values_BxExSxHkvxd: chunk memory values, same shape and dtype as keys.
      idx_BxCxK: int32 retrieved memory rows, in [0, E) (not checked at run time).
      w_BxCxK: float retrieval weights.
      scale: softmax scale (1/sqrt(d) in DRT).
      backend: ``"auto"`` (default: pallas on GPU when supported, else xla), ``"xla"``,
        ``"pallas"`` or ``"interpret"``.

    Returns:
      (B, C, P, H, d) in q's dtype.

    Raises:
      UnsupportedInputError: inconsistent shapes or dtypes, or a Pallas backend requested for
        inputs its kernels cannot take (S or d not a power of 2 in range, scale <= 0, other
        dtypes than float32/bfloat16/float16).
    """
    op = "gca_attention"
    if q_BxCxPxHxd.ndim != 5 or keys_BxExSxHkvxd.ndim != 5:
        raise UnsupportedInputError(
            f"{op}: expected q (B, C, P, H, d) and keys (B, E, S, Hkv, d), got "
            f"{q_BxCxPxHxd.shape} and {keys_BxExSxHkvxd.shape}"
        )
    _check_qkv(
        op,
        q_BxCxPxHxd.shape,
        keys_BxExSxHkvxd.shape,
        values_BxExSxHkvxd.shape,
        q_BxCxPxHxd.dtype,
        keys_BxExSxHkvxd.dtype,
        values_BxExSxHkvxd.dtype,
    )
    b, c = q_BxCxPxHxd.shape[:2]
    if idx_BxCxK.ndim != 3 or idx_BxCxK.shape[:2] != (b, c) or idx_BxCxK.shape[2] < 1:
        raise UnsupportedInputError(f"{op}: idx shape {idx_BxCxK.shape} must be (B={b}, C={c}, K)")
    if w_BxCxK.shape != idx_BxCxK.shape:
        raise UnsupportedInputError(f"{op}: w shape {w_BxCxK.shape} != idx shape {idx_BxCxK.shape}")
    if idx_BxCxK.dtype != jnp.int32:
        raise UnsupportedInputError(f"{op}: idx dtype must be int32, got {idx_BxCxK.dtype}")
    if not jnp.issubdtype(w_BxCxK.dtype, jnp.floating):
        raise UnsupportedInputError(f"{op}: w must be floating, got {w_BxCxK.dtype}")
    slab = max(math.prod(q_BxCxPxHxd.shape[1:]), math.prod(keys_BxExSxHkvxd.shape[1:]))
    ok, why = _kernel_support(
        q_BxCxPxHxd.dtype, keys_BxExSxHkvxd.shape[2], q_BxCxPxHxd.shape[4], scale, slab
    )
    chosen = resolve_backend(op, backend, pallas_supported=ok, reason=why)
    if chosen == "xla":
        return reference.gca_attention_reference(
            q_BxCxPxHxd, keys_BxExSxHkvxd, values_BxExSxHkvxd, idx_BxCxK, w_BxCxK, scale=scale
        )
    from kernels.gca import pallas_triton  # Imported lazily: only the Pallas path needs it.

    return pallas_triton.gca_attention_pallas(
        q_BxCxPxHxd,
        keys_BxExSxHkvxd,
        values_BxExSxHkvxd,
        idx_BxCxK,
        w_BxCxK,
        scale=scale,
        interpret=chosen == "interpret",
    )


def gca_decode(
    q_BxNxHxd: jax.Array,
    keys_BxKxSxHkvxd: jax.Array,
    values_BxKxSxHkvxd: jax.Array,
    w_BxK: jax.Array,
    *,
    scale: float,
    backend: str = "auto",
) -> jax.Array:
    """GCA of N query rows against K already-retrieved chunks (inference; forward only).

    Args:
      q_BxNxHxd: queries of the current chunk, 1 <= N.
      keys_BxKxSxHkvxd: keys of the retrieved chunks (moved to the device by the caller).
      values_BxKxSxHkvxd: values of the retrieved chunks.
      w_BxK: retrieval weights (0 for padding slots).
      scale: softmax scale.
      backend: ``"auto"``, ``"xla"``, ``"pallas"`` or ``"interpret"``.

    Returns:
      (B, N, H, d) in q's dtype.

    Raises:
      UnsupportedInputError: inconsistent shapes or dtypes, or a Pallas backend requested for
        inputs its kernel cannot take.
    """
    op = "gca_decode"
    if q_BxNxHxd.ndim != 4 or keys_BxKxSxHkvxd.ndim != 5:
        raise UnsupportedInputError(
            f"{op}: expected q (B, N, H, d) and keys (B, K, S, Hkv, d), got "
            f"{q_BxNxHxd.shape} and {keys_BxKxSxHkvxd.shape}"
        )
    _check_qkv(
        op,
        q_BxNxHxd.shape,
        keys_BxKxSxHkvxd.shape,
        values_BxKxSxHkvxd.shape,
        q_BxNxHxd.dtype,
        keys_BxKxSxHkvxd.dtype,
        values_BxKxSxHkvxd.dtype,
    )
    if w_BxK.shape != keys_BxKxSxHkvxd.shape[:2]:
        raise UnsupportedInputError(
            f"{op}: w shape {w_BxK.shape} must be (B, K) = {keys_BxKxSxHkvxd.shape[:2]}"
        )
    slab = max(math.prod(q_BxNxHxd.shape[1:]), math.prod(keys_BxKxSxHkvxd.shape[1:]))
    ok, why = _kernel_support(
        q_BxNxHxd.dtype, keys_BxKxSxHkvxd.shape[2], q_BxNxHxd.shape[3], scale, slab
    )
    chosen = resolve_backend(op, backend, pallas_supported=ok, reason=why)
    if chosen == "xla":
        return reference.gca_decode_reference(
            q_BxNxHxd, keys_BxKxSxHkvxd, values_BxKxSxHkvxd, w_BxK, scale=scale
        )
    from kernels.gca import pallas_triton  # Imported lazily: only the Pallas path needs it.

    return pallas_triton.gca_decode_pallas(
        q_BxNxHxd,
        keys_BxKxSxHkvxd,
        values_BxKxSxHkvxd,
        w_BxK,
        scale=scale,
        interpret=chosen == "interpret",
    )
