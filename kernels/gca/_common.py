"""Shared pieces of the GCA Pallas-Triton kernels: the static block config and tile helpers."""

import dataclasses
import math
import typing

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

LOG2_E = math.log2(math.e)
MIN_BLOCK = 16  # Triton tiles are powers of 2, and tl.dot needs K >= 16.


@dataclasses.dataclass(frozen=True)
class GcaBlockConfig:
    """Tile sizes and launch parameters of the GCA kernels (static; hashable).

    Attributes:
      block_q: query rows per program in the forward and dq kernels (power of 2, >= 16).
      block_q_dkv: query rows per inner step of the dK/dV kernel (power of 2, >= 16, <= block_q).
      block_s_dkv: memory slots per dK/dV program (power of 2, >= 16, divides S).
      block_n_decode: query rows per decode program (power of 2, >= 16).
      num_warps: warps of the forward and decode kernels.
      num_stages: software-pipelining stages of the forward and decode kernels.
      num_warps_bwd: warps of the backward kernels.
      num_stages_bwd: pipelining stages of the backward kernels.
    """

    # Defaults: the fastest of the runs on an H200 at the paper shape (docs/performance.md, "GCA").
    block_q: int = 64
    block_q_dkv: int = 64
    block_s_dkv: int = 64
    block_n_decode: int = 16
    num_warps: int = 4
    num_stages: int = 2
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            size = getattr(self, f.name)
            if f.name.startswith("block_") and (size < MIN_BLOCK or size & (size - 1)):
                raise ValueError(f"GcaBlockConfig.{f.name}={size} must be a power of 2 >= 16")
        if self.block_q_dkv > self.block_q:
            raise ValueError(
                f"GcaBlockConfig.block_q_dkv={self.block_q_dkv} must be <= block_q={self.block_q}"
            )

    @classmethod
    def default(cls, rows: int, slots: int) -> "GcaBlockConfig":
        """Heuristic defaults for `rows` query rows (P, or N in decode) and S memory slots."""
        block_q = max(MIN_BLOCK, min(64, pl.next_power_of_2(rows)))
        return cls(
            block_q=block_q,
            block_q_dkv=block_q,
            block_s_dkv=min(64, slots),
            block_n_decode=block_q,
        )

    def validate(self, slots: int) -> None:
        """Raises ValueError if a tile size does not fit S memory slots."""
        if slots % self.block_s_dkv:
            raise ValueError(f"GcaBlockConfig.block_s_dkv={self.block_s_dkv} must divide S={slots}")


def dot(a: jax.Array, b: jax.Array, *, trans_b: bool = False):
    """Triton dot, float32 accumulation; float32 inputs at IEEE precision (no TF32)."""
    precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return plt.dot(a, b, trans_b=trans_b, precision=precision)


def row_mask(start, block: int, rows: int) -> jax.Array:
    """(block,) bool: which of rows start .. start + block - 1 exist (< rows)."""
    return start + jnp.arange(block, dtype=jnp.int32) < rows


def prob_dot(p: jax.Array, x: jax.Array, *, use_tf32: bool):
    """Product p @ x of float32 probabilities or dS p with an input-dtype tile x.

    By default p is cast to x's dtype first. With use_tf32 and a 16-bit x, p stays float32 and
    x is upcast; the product runs at TF32 precision (10-bit mantissa instead of bf16's 7).
    """
    if use_tf32 and x.dtype != jnp.float32:
        return plt.dot(p, x.astype(jnp.float32), precision=jax.lax.Precision.HIGH)
    return dot(p.astype(x.dtype), x)


class RowTiles(typing.NamedTuple):
    """How a chunk's P query rows are cut into power-of-2 tiles.

    num_main tiles of block rows, then one tail tile of tail rows (0 if none), so P = 65 costs
    64 + 16 rows, not 128.

    Example: P = 65, block = 64 -> RowTiles(block=64, num_main=1, tail=16), padded = 80.
    """

    block: int
    num_main: int
    tail: int

    @property
    def count(self) -> int:
        return self.num_main + (self.tail > 0)

    @property
    def padded(self) -> int:
        return self.num_main * self.block + self.tail


def row_tiles(rows: int, block: int) -> RowTiles:
    """Tiles of at most `block` rows (a power of 2 >= 16) covering `rows` rows."""
    num_main, rem = divmod(rows, block)
    tail = max(16, pl.next_power_of_2(rem)) if rem else 0
    if tail == block:  # A tail as large as a main tile is just another (masked) main tile.
        return RowTiles(block, num_main + 1, 0)
    return RowTiles(block, num_main, tail)


def for_row_tile(tiles: RowTiles, t, body) -> None:
    """Runs body(first_row, tile_rows) for tile t (dynamic), with tile_rows static per branch."""
    if not tiles.tail:
        body(t * tiles.block, tiles.block)
        return
    if tiles.num_main:
        pl.when(t < tiles.num_main)(lambda: body(t * tiles.block, tiles.block))
    # t * block, not a Python int: a static start past P - tail would fail the bounds check.
    pl.when(t == tiles.num_main)(lambda: body(t * tiles.block, tiles.tail))


def exp2(x: jax.Array, *, ftz: bool) -> jax.Array:
    """exp2 of a float32 tile; with ftz, one ex2.approx.ftz.f32 instruction per element.

    Triton lowers jnp.exp2 to ex2.approx.f32 without .ftz, which adds instructions around each
    MUFU op to keep subnormal results; probabilities below 2**-126 are 0 for a softmax anyway.
    Inline PTX only runs on the GPU: interpret mode passes ftz=False.
    """
    if not ftz:
        return jnp.exp2(x)
    [y] = plt.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;",
        args=[x],
        constraints="=f,f",
        pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.float32)],
    )
    return y
