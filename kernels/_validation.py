"""Input checks shared by the public kernel ops: the part of the contract every op has."""

import jax
import jax.numpy as jnp

from kernels._backend import UnsupportedInputError


def check_qkv(
    op: str, q: jax.Array, keys: jax.Array, values: jax.Array, *, q_axes: str, kv_axes: str
) -> None:
    """Raises UnsupportedInputError unless q, keys and values fit the attention contract.

    Every op takes q as (..., H, d) and keys/values as (..., Hkv, d) with the batch first: keys and
    values have one shape, all three share one float dtype and the batch, the head dims agree and
    H % Hkv == 0 (GQA: query head h reads kv head h // (H // Hkv)).

    Args:
      op: the public op's name, for messages.
      q: queries, laid out as q_axes.
      keys: keys, laid out as kv_axes.
      values: values, same shape as keys.
      q_axes: q's axes in glossary letters, e.g. ``"B, C, P, H, d"``; their count is q's rank.
      kv_axes: the axes of keys and values, e.g. ``"B, E, S, Hkv, d"``.

    Raises:
      UnsupportedInputError: naming the rule and the values received.
    """
    q_rank, kv_rank = len(q_axes.split(",")), len(kv_axes.split(","))
    if q.ndim != q_rank or keys.ndim != kv_rank or keys.shape != values.shape:
        raise UnsupportedInputError(
            f"{op}: expected q ({q_axes}) and keys, values ({kv_axes}) of one shape, got "
            f"{q.shape}, {keys.shape} and {values.shape}"
        )
    dtypes = (q.dtype, keys.dtype, values.dtype)
    if len(set(dtypes)) != 1 or not jnp.issubdtype(q.dtype, jnp.floating):
        raise UnsupportedInputError(
            f"{op}: q, keys and values must share one float dtype, got {dtypes}"
        )
    if q.shape[0] != keys.shape[0]:
        raise UnsupportedInputError(f"{op}: batch of q {q.shape} != batch of keys {keys.shape}")
    (h, d), (hkv, dk) = q.shape[-2:], keys.shape[-2:]
    if d != dk:
        raise UnsupportedInputError(f"{op}: head dim of q (d={d}) != head dim of keys (d={dk})")
    if hkv == 0 or h % hkv:
        raise UnsupportedInputError(
            f"{op}: query heads H={h} must be a multiple of kv heads Hkv={hkv}"
        )
