"""Pallas-Triton kernels for causal sliding-window attention with ALiBi (forward and backward).

Contract:
  - q (B, T, H, d), k/v (B, T, Hkv, d), ``H % Hkv == 0``; dtype bf16 or f32 (one dtype; the caller
    rejects others).
    Dots accumulate in f32 (f32 inputs use IEEE f32 dots, not TF32); softmax is f32.
  - Any T: T is zero-padded to a multiple of the largest block and sliced back. Padded query rows
    see themselves and are discarded; real queries never see padded keys (they lie in the future).
  - Any d <= 256: d is zero-padded to a power of two >= 16 (Triton tiles are powers of two, and
    ``tl.dot`` needs K >= 16). Run on an H200 with d = 48 and 64; d = 128 passes the CPU-side
    CUDA lowering check only.
  - Block sizes are powers of two >= 16 (``BlockConfig``); larger blocks are clamped to the padded
    sequence length so tiny sequences do not pay for 128-row tiles.
  - ``window = -1`` is full causal; ``window >= 0`` restricts each query to the ``window + 1`` most
    recent keys.

Layout: the kernels read q/k/v in their (B, T, H, d) layout (no transposes); batch and head are
grid axes. The forward grid is (T / Bq, B, H); each program loops over only the key blocks that
intersect its band ``[q_start - W, q_start + Bq)``, so work is O(T * W). Each band is split into
three ranges: the left edge and the diagonal need the window/causal mask; the middle does not.
The mask and the ALiBi bias are computed in registers from block offsets: no (T, T) array and no
bias tensor exists. The softmax runs in base 2 (``exp2``), with log2(e) folded into scale and
slope.

Backward (FlashAttention-2 style): ``delta = rowsum(o * do)`` in XLA, then two kernels:
``swa_bwd_dq`` (grid over query blocks, loop over the key band) and ``swa_bwd_dkv`` (grid over key
blocks and kv heads, loop over the query heads of the group and over the query band). The forward
saves only the base-2 logsumexp (B, H, T) besides its inputs and output.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

_LOG2E = math.log2(math.e)
_M_INIT = -1e30  # Finite running-max start: exp2(-inf - _M_INIT) = 0 for fully masked rows.
_MIN_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and launch parameters of the three kernels (all block sizes powers of two).

    Attributes:
      block_q: forward query rows per program.
      block_k: forward key rows per loop step.
      num_warps: forward warps per program.
      num_stages: forward software-pipelining depth.
      block_q_dq: dq kernel query rows per program.
      block_k_dq: dq kernel key rows per loop step.
      block_q_dkv: dkv kernel query rows per loop step.
      block_k_dkv: dkv kernel key rows per program.
      num_warps_bwd: backward warps per program.
      num_stages_bwd: backward software-pipelining depth.
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
            v = getattr(self, f.name)
            if f.name.startswith("block_") and (v < _MIN_BLOCK or v & (v - 1)):
                raise ValueError(f"{f.name}={v} must be a power of two >= {_MIN_BLOCK}")

    @property
    def max_block(self) -> int:
        """The largest block size (T is padded to a multiple of it)."""
        return max(getattr(self, f.name) for f in dataclasses.fields(self) if "block" in f.name)

    def clamped(self, t_pad: int) -> "BlockConfig":
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
_WIDE_CONFIG = BlockConfig(
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


def default_config(T: int, d: int, window: int) -> BlockConfig:
    """Heuristic blocks for a sequence length, head dim and window, clamped for short T."""
    config = BlockConfig() if 0 <= window < _WIDE_WINDOW else _WIDE_CONFIG
    if d > 64:
        config = dataclasses.replace(config, num_warps=8, num_warps_bwd=8)
    return config.clamped(max(_MIN_BLOCK, pl.next_power_of_2(T)))


def _cdiv(a, b: int):
    """Ceil division of a non-negative traced int by a positive static int."""
    return lax.div(a + (b - 1), b)


def _band(start, size: int, other_block: int, window: int, n_other: int, *, rows_are_q: bool):
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


def _three_loops(lo, b, c, hi, body, carry):
    """Runs ``body(j, carry, masked)`` over [lo, b) masked, [b, c) unmasked, [c, hi) masked."""
    carry = lax.fori_loop(lo, b, functools.partial(body, masked=True), carry)
    carry = lax.fori_loop(b, c, functools.partial(body, masked=False), carry)
    return lax.fori_loop(c, hi, functools.partial(body, masked=True), carry)


def _logits2(s, q_pos, k_pos, slope2, c2, window, masked, keys_on_rows=False):
    """Base-2 logits ``s * scale * log2(e) - slope * log2(e) * (i - j)``, masked outside the band.

    ``q_pos``/``k_pos`` are int32 positions relative to the key block start (only differences
    matter), so the bias is a row vector plus a column vector: two adds per logit, not a (T, T)
    tensor, and no cancellation between large absolute positions.
    """
    q_bias = (-slope2) * q_pos.astype(jnp.float32)
    k_bias = slope2 * k_pos.astype(jnp.float32)
    if keys_on_rows:
        s = s * c2 + k_bias[:, None] + q_bias[None, :]
    else:
        s = s * c2 + q_bias[:, None] + k_bias[None, :]
    if masked:
        diff = q_pos[None, :] - k_pos[:, None] if keys_on_rows else q_pos[:, None] - k_pos[None, :]
        visible = diff >= 0
        if window >= 0:
            visible = visible & (diff <= window)
        s = jnp.where(visible, s, -jnp.inf)
    return s


def _swa_fwd_kernel(
    q_ref, k_ref, v_ref, slopes_ref, o_ref, lse_ref, *, window, scale, block_k, precision
):
    """One query block of one (batch, head): online softmax over the key band."""
    block_q = q_ref.shape[0]
    q_start = pl.program_id(0) * block_q
    slope2 = slopes_ref[pl.program_id(2)] * _LOG2E
    c2 = scale * _LOG2E
    n_k = k_ref.shape[0] // block_k
    q = q_ref[...]
    q_iota = jnp.arange(block_q, dtype=jnp.int32)
    k_pos = jnp.arange(block_k, dtype=jnp.int32)

    def body(j, carry, masked):
        acc, m, row_sum = carry
        k_start = j * block_k
        k = k_ref[pl.ds(k_start, block_k), :]
        v = v_ref[pl.ds(k_start, block_k), :]
        s = plt.dot(q, k, trans_b=True, precision=precision)
        s = _logits2(s, q_iota + (q_start - k_start), k_pos, slope2, c2, window, masked)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        alpha = jnp.exp2(m - m_new)
        p = jnp.exp2(s - m_new[:, None])
        row_sum = row_sum * alpha + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + plt.dot(p.astype(v.dtype), v, precision=precision)
        return acc, m_new, row_sum

    acc = jnp.zeros(q.shape, jnp.float32)
    m = jnp.full((block_q,), _M_INIT, jnp.float32)
    row_sum = jnp.zeros((block_q,), jnp.float32)
    lo, b, c, hi = _band(q_start, block_q, block_k, window, n_k, rows_are_q=True)
    acc, m, row_sum = _three_loops(lo, b, c, hi, body, (acc, m, row_sum))
    # Every row sees at least itself, so row_sum >= 1.
    lse_ref[...] = m + jnp.log2(row_sum)
    o_ref[...] = (acc / row_sum[:, None]).astype(o_ref.dtype)


def _swa_bwd_dq_kernel(
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    slopes_ref,
    dq_ref,
    *,
    window,
    scale,
    block_k,
    precision,
):
    """Computes dq for one query block: recompute p from lse, loop over the key band."""
    block_q = q_ref.shape[0]
    q_start = pl.program_id(0) * block_q
    slope2 = slopes_ref[pl.program_id(2)] * _LOG2E
    c2 = scale * _LOG2E
    n_k = k_ref.shape[0] // block_k
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    q_iota = jnp.arange(block_q, dtype=jnp.int32)
    k_pos = jnp.arange(block_k, dtype=jnp.int32)

    def body(j, dq, masked):
        k_start = j * block_k
        k = k_ref[pl.ds(k_start, block_k), :]
        v = v_ref[pl.ds(k_start, block_k), :]
        s = plt.dot(q, k, trans_b=True, precision=precision)
        s = _logits2(s, q_iota + (q_start - k_start), k_pos, slope2, c2, window, masked)
        p = jnp.exp2(s - lse[:, None])
        dp = plt.dot(do, v, trans_b=True, precision=precision)
        ds = p * (dp - delta[:, None])
        return dq + plt.dot(ds.astype(k.dtype), k, precision=precision)

    lo, b, c, hi = _band(q_start, block_q, block_k, window, n_k, rows_are_q=True)
    dq = _three_loops(lo, b, c, hi, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _swa_bwd_dkv_kernel(
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    slopes_ref,
    dk_ref,
    dv_ref,
    *,
    window,
    scale,
    block_q,
    group,
    precision,
):
    """Computes dk, dv for one key block of one kv head, looping over its query heads and band."""
    block_k = k_ref.shape[0]
    k_start = pl.program_id(0) * block_k
    h0 = pl.program_id(2) * group
    c2 = scale * _LOG2E
    n_q = q_ref.shape[0] // block_q
    k = k_ref[...]
    v = v_ref[...]
    # Transposed tiles: keys on rows, queries on columns.
    q_iota = jnp.arange(block_q, dtype=jnp.int32)
    k_pos = jnp.arange(block_k, dtype=jnp.int32)
    lo, b, c, hi = _band(k_start, block_k, block_q, window, n_q, rows_are_q=False)

    def one_head(g, carry):
        slope2 = slopes_ref[h0 + g] * _LOG2E

        def body(i, carry, masked):
            dk, dv = carry
            q_start = i * block_q
            q = q_ref[pl.ds(q_start, block_q), g, :]
            do = do_ref[pl.ds(q_start, block_q), g, :]
            lse = lse_ref[g, pl.ds(q_start, block_q)]
            delta = delta_ref[g, pl.ds(q_start, block_q)]
            s = plt.dot(k, q, trans_b=True, precision=precision)
            q_pos = q_iota + (q_start - k_start)
            s = _logits2(s, q_pos, k_pos, slope2, c2, window, masked, keys_on_rows=True)
            p = jnp.exp2(s - lse[None, :])
            dv = dv + plt.dot(p.astype(do.dtype), do, precision=precision)
            dp = plt.dot(v, do, trans_b=True, precision=precision)
            ds = p * (dp - delta[None, :])
            dk = dk + plt.dot(ds.astype(q.dtype), q, precision=precision)
            return dk, dv

        return _three_loops(lo, b, c, hi, body, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    if group == 1:
        dk, dv = one_head(0, (zeros, zeros))
    else:
        dk, dv = lax.fori_loop(0, group, one_head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _precision(dtype):
    """IEEE f32 dots for f32 inputs (Triton would use TF32); default for 16-bit inputs."""
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _fwd_call(q, k, v, slopes, window, scale, config, interpret):
    """Forward pallas_call on padded inputs; returns (o, lse (B, H, Tp) base-2)."""
    B, Tp, H, dp = q.shape
    Hkv = k.shape[2]
    G = H // Hkv
    bq = config.block_q
    kernel = functools.partial(
        _swa_fwd_kernel,
        window=window,
        scale=scale,
        block_k=config.block_k,
        precision=_precision(q.dtype),
    )
    return pl.pallas_call(
        kernel,
        grid=(Tp // bq, B, H),
        in_specs=[
            pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0)),
            pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
            pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
            pl.BlockSpec(slopes.shape, lambda i, b, h: (0,)),
        ],
        out_specs=[
            pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0)),
            pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((B, H, Tp), jnp.float32),
        ],
        compiler_params=plt.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        ),
        interpret=interpret,
        name="swa_fwd",
    )(q, k, v, slopes)


def _bwd_calls(q, k, v, slopes, o, lse, do, window, scale, config, interpret):
    """The two backward pallas_calls on padded inputs; returns (dq, dk, dv)."""
    B, Tp, H, dp = q.shape
    Hkv = k.shape[2]
    G = H // Hkv
    precision = _precision(q.dtype)
    params = plt.CompilerParams(num_warps=config.num_warps_bwd, num_stages=config.num_stages_bwd)
    delta = jnp.einsum(
        "bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32)
    )  # rowsum(o * do), (B, H, Tp) f32.

    bq = config.block_q_dq
    row_spec = pl.BlockSpec((None, bq, None, dp), lambda i, b, h: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, Tp, None, dp), lambda i, b, h: (b, 0, lax.div(h, G), 0))
    vec_spec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    dq = pl.pallas_call(
        functools.partial(
            _swa_bwd_dq_kernel,
            window=window,
            scale=scale,
            block_k=config.block_k_dq,
            precision=precision,
        ),
        grid=(Tp // bq, B, H),
        in_specs=[
            row_spec,
            kv_spec,
            kv_spec,
            row_spec,
            vec_spec,
            vec_spec,
            pl.BlockSpec(slopes.shape, lambda i, b, h: (0,)),
        ],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=interpret,
        name="swa_bwd_dq",
    )(q, k, v, do, lse, delta, slopes)

    bk = config.block_k_dkv
    # Group the query heads by kv head (a free reshape) so one program sees its whole group.
    q_g = q.reshape(B, Tp, Hkv, G, dp)
    do_g = do.reshape(B, Tp, Hkv, G, dp)
    grp_spec = pl.BlockSpec((None, Tp, None, G, dp), lambda j, b, hk: (b, 0, hk, 0, 0))
    grp_vec_spec = pl.BlockSpec((None, None, G, Tp), lambda j, b, hk: (b, hk, 0, 0))
    kblk_spec = pl.BlockSpec((None, bk, None, dp), lambda j, b, hk: (b, j, hk, 0))
    dk, dv = pl.pallas_call(
        functools.partial(
            _swa_bwd_dkv_kernel,
            window=window,
            scale=scale,
            block_q=config.block_q_dkv,
            group=G,
            precision=precision,
        ),
        grid=(Tp // bk, B, Hkv),
        in_specs=[
            grp_spec,
            kblk_spec,
            kblk_spec,
            grp_spec,
            grp_vec_spec,
            grp_vec_spec,
            pl.BlockSpec(slopes.shape, lambda j, b, hk: (0,)),
        ],
        out_specs=[kblk_spec, kblk_spec],
        out_shape=[
            jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype),
        ],
        compiler_params=params,
        interpret=interpret,
        name="swa_bwd_dkv",
    )(q_g, k, v, do_g, lse.reshape(B, Hkv, G, Tp), delta.reshape(B, Hkv, G, Tp), slopes)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _swa(q, k, v, slopes, window, scale, config, interpret):
    """Sliding-window attention on padded inputs (shared by "pallas" and "interpret")."""
    return _fwd_call(q, k, v, slopes, window, scale, config, interpret)[0]


def _swa_vjp_fwd(q, k, v, slopes, window, scale, config, interpret):
    o, lse = _fwd_call(q, k, v, slopes, window, scale, config, interpret)
    return o, (q, k, v, slopes, o, lse)


def _swa_vjp_bwd(window, scale, config, interpret, residuals, do):
    q, k, v, slopes, o, lse = residuals
    dq, dk, dv = _bwd_calls(q, k, v, slopes, o, lse, do, window, scale, config, interpret)
    return dq, dk, dv, jnp.zeros_like(slopes)  # Slopes are constants.


_swa.defvjp(_swa_vjp_fwd, _swa_vjp_bwd)


def sliding_window_attention_pallas(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    window: int,
    alibi_slopes: jax.Array | None,
    scale: float | None = None,
    config: BlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Pads T and d, runs the Pallas kernels, slices back. Inputs are validated by the caller.

    Args:
      q_BxTxHxd: queries.
      k_BxTxHkvxd: keys.
      v_BxTxHkvxd: values.
      window: W >= 0, or -1 for full causal.
      alibi_slopes: (H,) slopes or None.
      scale: logit scale; defaults to ``1 / sqrt(d)``.
      config: block sizes; defaults to ``default_config(T, d, window)``.
      interpret: run the kernels in the Pallas interpreter (CPU tests).

    Returns:
      (B, T, H, d) in q's dtype.
    """
    B, T, H, d = q_BxTxHxd.shape
    scale = float(d**-0.5 if scale is None else scale)
    config = default_config(T, d, window) if config is None else config
    t_pad = -(-T // config.max_block) * config.max_block
    config = config.clamped(t_pad)
    d_pad = max(_MIN_BLOCK, pl.next_power_of_2(d))
    pad = ((0, 0), (0, t_pad - T), (0, 0), (0, d_pad - d))
    q, k, v = (jnp.pad(x, pad) for x in (q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd))
    h_pad = pl.next_power_of_2(H)
    if alibi_slopes is None:
        slopes_Hp = jnp.zeros((h_pad,), jnp.float32)
    else:
        slopes_Hp = jnp.pad(alibi_slopes.astype(jnp.float32), (0, h_pad - H))
    o = _swa(q, k, v, slopes_Hp, window, scale, config, interpret)
    return o[:, :T, :, :d]
