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
from kernels._validation import check_qkv
from kernels.gca import reference

__all__ = ["gca_attention", "gca_decode"]

_KERNEL_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _pallas_support(q: jax.Array, keys: jax.Array, scale: float) -> str:
    """Why the Pallas-Triton kernels cannot take these inputs (power-of-2 tiles), or ""."""
    slots, head_dim = keys.shape[2], q.shape[-1]
    slab_elements = max(math.prod(q.shape[1:]), math.prod(keys.shape[1:]))
    if slab_elements >= 2**31:
        # Each program indexes one batch element's whole q or memory slab: keep offsets in int32.
        return f"one batch element's q or memory has {slab_elements} >= 2**31 elements"
    if not scale > 0:
        return f"{scale=} must be positive"
    if jnp.dtype(q.dtype) not in _KERNEL_DTYPES:
        return f"dtype {jnp.dtype(q.dtype)} not in float32/bfloat16/float16"
    if not (_is_pow2(slots) and 16 <= slots <= 128):
        return f"slots per chunk S={slots} must be a power of 2 in [16, 128]"
    if not (_is_pow2(head_dim) and 16 <= head_dim <= 256):
        return f"head dim d={head_dim} must be a power of 2 in [16, 256]"
    return ""


def gca_attention(
    q_BxCxPxHxd: jax.Array,
    keys_BxExSxHkvxd: jax.Array,
    values_BxExSxHkvxd: jax.Array,
    idx_BxCxK: jax.Array,
    w_BxCxK: jax.Array,
    *,
    scale: float,
    backend: str = "auto",
    use_tf32_probs: bool = False,
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
      use_tf32_probs: an accuracy mode of the Pallas backends for 16-bit inputs: keep the
        probabilities and dS in float32 and multiply them at TF32 precision (10-bit mantissa)
        instead of casting them to the input dtype first (the default, as the original kernel,
        docs/spec.md §2.2-2.3). Measured on an H200 at the paper shape: 2.4x slower forward and
        2.1x slower forward+backward, for bf16 errors (rel_l2) of 1.7e-3 instead of 2.1-2.4e-3
        (docs/performance.md, "GCA"). The XLA reference always keeps them in float32, so there
        the flag changes nothing.

    Returns:
      (B, C, P, H, d) in q's dtype.

    Raises:
      UnsupportedInputError: inconsistent shapes or dtypes, or a Pallas backend requested for
        inputs its kernels cannot take (S or d not a power of 2 in range, scale <= 0, other
        dtypes than float32/bfloat16/float16).
    """
    op = "gca_attention"
    check_qkv(
        op,
        q_BxCxPxHxd,
        keys_BxExSxHkvxd,
        values_BxExSxHkvxd,
        q_axes="B, C, P, H, d",
        kv_axes="B, E, S, Hkv, d",
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
    why = _pallas_support(q_BxCxPxHxd, keys_BxExSxHkvxd, scale)
    chosen = resolve_backend(op, backend, pallas_supported=not why, reason=why)
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
        use_tf32_probs=use_tf32_probs,
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
    check_qkv(
        op,
        q_BxNxHxd,
        keys_BxKxSxHkvxd,
        values_BxKxSxHkvxd,
        q_axes="B, N, H, d",
        kv_axes="B, K, S, Hkv, d",
    )
    if w_BxK.shape != keys_BxKxSxHkvxd.shape[:2]:
        raise UnsupportedInputError(
            f"{op}: w shape {w_BxK.shape} must be (B, K) = {keys_BxKxSxHkvxd.shape[:2]}"
        )
    why = _pallas_support(q_BxNxHxd, keys_BxKxSxHkvxd, scale)
    chosen = resolve_backend(op, backend, pallas_supported=not why, reason=why)
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
