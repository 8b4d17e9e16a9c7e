"""Shared pieces of the landmark Pallas-Triton kernels: the static config and tile helpers."""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

LOG2_E = math.log2(math.e)
M_INIT = -1e30  # Finite running-max start: exp2(M_INIT - m) = 0 without inf - inf.
MIN_BLOCK = 16  # Triton tiles are powers of 2, and tl.dot needs K >= 16.
MAX_BLOCK = 128  # One landmark block is one tile; larger tiles spill registers.


@dataclasses.dataclass(frozen=True)
class LandmarkBlockConfig:
    """Launch parameters of the landmark kernels (static; hashable).

    The tiles are fixed by the op: one query tile and one key tile per landmark block of
    P = ``block_len`` positions, so only warps and pipelining stages are free.

    Attributes:
      num_warps: warps of the forward kernel.
      num_stages: software-pipelining stages of the forward kernel.
      num_warps_bwd: warps of the backward kernels.
      num_stages_bwd: pipelining stages of the backward kernels.
    """

    num_warps: int = 4
    num_stages: int = 2
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(
                    f"LandmarkBlockConfig.{f.name}={getattr(self, f.name)} must be >= 1"
                )

    @classmethod
    def default(cls, block_len: int, head_dim: int) -> "LandmarkBlockConfig":
        """Heuristic defaults: 8 warps for 128-row tiles or heads wider than 64."""
        if block_len > 64 or head_dim > 64:
            return cls(num_warps=8, num_warps_bwd=8)
        return cls()


def dot_precision(dtype):
    """IEEE f32 dots for f32 inputs (Triton would use TF32); default for 16-bit inputs."""
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def diagonal_mask(p: int, *, keys_on_rows: bool = False) -> jax.Array:
    """(P, P) visibility inside the own block: key slot u <= query slot r and u not the landmark.

    Example, P = 4 (rows r = queries, columns u = keys; slot 3 is the landmark):
    r=0: [1 0 0 0], r=1: [1 1 0 0], r=2: [1 1 1 0], r=3 (the landmark query): [1 1 1 0].
    """
    rows_Px1 = jnp.arange(p, dtype=jnp.int32)[:, None]
    cols_1xP = jnp.arange(p, dtype=jnp.int32)[None, :]
    r, u = (cols_1xP, rows_Px1) if keys_on_rows else (rows_Px1, cols_1xP)
    return (u <= r) & (u < p - 1)


def landmark_slot(p: int, *, axis: int) -> jax.Array:
    """(P, 1) or (1, P) boolean: true at the landmark's slot P - 1 along ``axis`` (the key axis)."""
    slot = jnp.arange(p, dtype=jnp.int32)
    return (slot[:, None] if axis == 0 else slot[None, :]) == p - 1


def past_block(s2: jax.Array, *, key_axis: int):
    """Landmark logit and in-block softmax of one past key block, from base-2 logits.

    Args:
      s2: (Q, P) (key_axis 1) or (P, Q) (key_axis 0) base-2 logits of the block's keys.
      key_axis: the axis of ``s2`` that runs over the block's keys.

    Returns:
      (lmk2 (Q,): the landmark's base-2 logit, n: in-block softmax over the P - 1 other keys,
      0 at the landmark, shaped like ``s2``).
    """
    p = s2.shape[key_axis]
    is_lmk = landmark_slot(p, axis=key_axis)
    lmk2 = jnp.sum(jnp.where(is_lmk, s2, 0.0), axis=key_axis)
    inner = jnp.where(is_lmk, -jnp.inf, s2)
    m_in = jnp.max(inner, axis=key_axis, keepdims=True)
    e = jnp.exp2(inner - m_in)
    n = e / jnp.sum(e, axis=key_axis, keepdims=True)  # Row sums >= 1: the max term is 1.
    return lmk2, n
