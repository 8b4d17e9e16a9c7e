"""Shared pieces of the SWA Pallas-Triton kernels: the static block config and band helpers."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

LOG2_E = math.log2(math.e)
M_INIT = -1e30  # Finite running-max start: exp2(-inf - M_INIT) = 0 for fully masked rows.
MIN_BLOCK = 16  # Triton tiles are powers of 2, and tl.dot needs K >= 16.


@dataclasses.dataclass(frozen=True)
class SwaBlockConfig:
    """Tile sizes and launch parameters of the SWA kernels (static; hashable).

    Attributes:
      block_q: forward query rows per program (power of 2, >= 16).
      block_k: forward key rows per loop step (power of 2, >= 16).
      num_warps: warps of the forward kernel.
      num_stages: software-pipelining stages of the forward kernel.
      block_q_dq: query rows per dq program (power of 2, >= 16).
      block_k_dq: key rows per dq loop step (power of 2, >= 16).
      block_q_dkv: query rows per dK/dV loop step (power of 2, >= 16).
      block_k_dkv: key rows per dK/dV program (power of 2, >= 16).
      num_warps_bwd: warps of the backward kernels.
      num_stages_bwd: pipelining stages of the backward kernels.
    """

    # Defaults: the fastest of a sweep on an H200 at B=4, T=16640, H=12, d=64, W=512, bf16
    # (benchmarks/swa.py --sweep; docs/performance.md).
    block_q: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    block_q_dq: int = 64
    block_k_dq: int = 32
    block_q_dkv: int = 32
    block_k_dkv: int = 64
    num_warps_bwd: int = 4
    num_stages_bwd: int = 3

    def __post_init__(self):
        for f in dataclasses.fields(self):
            size = getattr(self, f.name)
            if f.name.startswith("block_") and (size < MIN_BLOCK or size & (size - 1)):
                raise ValueError(f"SwaBlockConfig.{f.name}={size} must be a power of 2 >= 16")

    @classmethod
    def default(cls, seq_len: int, head_dim: int, window: int) -> "SwaBlockConfig":
        """Heuristic defaults for T tokens, head dim d and window W, clamped for short T."""
        config = cls() if 0 <= window < _WIDE_WINDOW else _WIDE_CONFIG
        if head_dim > 64:
            config = dataclasses.replace(config, num_warps=8, num_warps_bwd=8)
        return config.clamped(max(MIN_BLOCK, pl.next_power_of_2(seq_len)))

    @property
    def max_block(self) -> int:
        """The largest block size (T is padded to a multiple of it)."""
        return max(getattr(self, f.name) for f in dataclasses.fields(self) if "block" in f.name)

    def clamped(self, t_pad: int) -> "SwaBlockConfig":
        """Returns a copy with every block size at most ``t_pad``."""
        blocks = {
            f.name: min(getattr(self, f.name), t_pad)
            for f in dataclasses.fields(self)
            if f.name.startswith("block_")
        }
        return dataclasses.replace(self, **blocks)


# Full causal (or a window much longer than a tile) runs long unmasked loops, where taller tiles
# do better: fastest of the full-causal sweep at the bench shape (19.5 vs 20.6 ms fwd+bwd for the
# windowed defaults).
_WIDE_CONFIG = SwaBlockConfig(
    block_q=128,
    block_k=64,
    num_warps=4,
    num_stages=3,
    block_q_dq=128,
    block_k_dq=32,
    block_q_dkv=32,
    block_k_dkv=128,
    num_warps_bwd=4,
    num_stages_bwd=3,
)
_WIDE_WINDOW = 2048


def dot_precision(dtype):
    """IEEE f32 dots for f32 inputs (Triton would use TF32); default for 16-bit inputs."""
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _cdiv(a, b: int):
    """Ceil division of a non-negative traced int by a positive static int."""
    return lax.div(a + (b - 1), b)


def band(start, size: int, other_block: int, window: int, n_other: int, *, rows_are_q: bool):
    """Splits the band of blocks that a row block interacts with into masked/unmasked ranges.

    For a query block ``[start, start + size)`` (rows_are_q) returns key-block bounds; for a key
    block returns query-block bounds. Blocks in ``[lo, b)`` and ``[c, hi)`` need the mask, blocks
    in ``[b, c)`` lie fully inside the band. Worked example (rows_are_q, Bq=128, Bk=64, W=512,
    start=1024): keys visible from the block are [512, 1152), so lo=8, hi=18; blocks 8..9 hold keys
    more than W behind the block's last row, 16..17 overlap the diagonal, so b=10, c=16.
    """
    if rows_are_q:
        lo = 0 if window < 0 else lax.div(jnp.maximum(start - window, 0), other_block)
        hi = jnp.minimum(_cdiv(start + size, other_block), n_other)
        # Unmasked: the whole key block is behind the first row and within W of the last row.
        mid_lo = 0 if window < 0 else _cdiv(jnp.maximum(start + size - 1 - window, 0), other_block)
        mid_hi = lax.div(start + 1, other_block)
    else:
        lo = lax.div(start, other_block)
        hi = (
            n_other
            if window < 0
            else jnp.minimum(_cdiv(start + size + window, other_block), n_other)
        )
        mid_lo = _cdiv(start + size - 1, other_block)
        mid_hi = n_other if window < 0 else lax.div(start + window + 1, other_block)
    lo = jnp.asarray(lo, jnp.int32)
    b = jnp.clip(mid_lo, lo, hi)
    c = jnp.clip(mid_hi, b, hi)
    return lo, b, c, hi


def three_loops(lo, b, c, hi, body, carry):
    """Runs ``body(j, carry, masked)`` over [lo, b) masked, [b, c) unmasked, [c, hi) masked."""
    carry = lax.fori_loop(lo, b, functools.partial(body, masked=True), carry)
    carry = lax.fori_loop(b, c, functools.partial(body, masked=False), carry)
    return lax.fori_loop(c, hi, functools.partial(body, masked=True), carry)


def logits2(
    s: jax.Array, q_pos_Q, k_pos_J, slope2, c2, window: int, masked: bool, keys_on_rows=False
) -> jax.Array:
    """Base-2 logits ``s * scale * log2(e) - slope * log2(e) * (i - j)``, masked outside the band.

    ``s`` is a (Q, J) tile of q.k dots, or (J, Q) with keys_on_rows. ``q_pos_Q``/``k_pos_J`` are
    int32 positions relative to the key block start (only differences matter), so the bias is a
    row vector plus a column vector: two adds per logit, not a (T, T) tensor, and no cancellation
    between large absolute positions.
    """
    q_bias_Q = (-slope2) * q_pos_Q.astype(jnp.float32)
    k_bias_J = slope2 * k_pos_J.astype(jnp.float32)
    if keys_on_rows:
        s = s * c2 + k_bias_J[:, None] + q_bias_Q[None, :]
    else:
        s = s * c2 + q_bias_Q[:, None] + k_bias_J[None, :]
    if masked:
        diff = (
            q_pos_Q[None, :] - k_pos_J[:, None]
            if keys_on_rows
            else q_pos_Q[:, None] - k_pos_J[None, :]
        )
        visible = diff >= 0
        if window >= 0:
            visible = visible & (diff <= window)
        s = jnp.where(visible, s, -jnp.inf)
    return s
