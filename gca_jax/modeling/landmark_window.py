"""Landmark Attention over a window plus retrieved memory blocks (long-context inference).

Inference (docs/inference.md, "Landmark Attention") runs the sequence in windows of W =
``landmark.eval_window`` positions, aligned to blocks of P = ``landmark.block_len``. Every
complete block before the window is *memory*: its keys without RoPE, its values, and its
landmark key (the block's slot P - 1). A query at window offset i attends, with one grouped
softmax (kernels/landmark/reference.py), to

- the K = ``eval_top_k`` memory blocks with the largest q . landmark logits (per batch element,
  head and query), each re-rotated at a position just before the window;
- the complete blocks of the window before its own (through their landmarks);
- its own block's earlier raw tokens.

Positions live in a frame whose origin is the window's first position (RoPE logits depend only
on position differences, and small numbers keep float32 angles exact at any context length).
The re-rotation follows the original: with n memory blocks and k = min(K, n), the selected
blocks, sorted by block index, take ranks r = 0..k-1 and sit at block slot ``r - (k + 1)``, one
slot later (``r - k``) when the block is one of the k most recent. So when every memory block is
selected (K >= n), each sits at its true position, and the window's outputs equal those of the
full forward. For selection, the landmark keys of the k most recent blocks are rotated at their
true positions, all older ones at the one position ``-k * P - 1`` (before the re-rotated span).

Worked example, P = 4, K = 2, n = 5 memory blocks (positions -20..-1), window at 0..W-1:
k = 2; older blocks 0..2 score with their landmark at -9, blocks 3 and 4 at -5 and -1. If a query
selects blocks {1, 4}: block 1 (rank 0, old) is re-rotated at slot -3 (positions -12..-9), block
4 (rank 1, recent) at slot -1 (-4..-1, its true place).
"""

import jax
import jax.numpy as jnp
from flax import struct

from gca_jax.modeling.layers import rope_at


@struct.dataclass
class BlockSelection:
    """The memory blocks each query attends to, and where they are re-rotated.

    Attributes:
      idx_BxQxHxK: rows of the block arrays (``BlockMemory.keys``), ascending per query/head.
      slot_BxQxHxK: block slot in the window frame: key u of the block sits at slot * P + u.
      valid_BxQxHxK: False where fewer than K memory blocks exist (weight 0).
    """

    idx_BxQxHxK: jax.Array
    slot_BxQxHxK: jax.Array
    valid_BxQxHxK: jax.Array


@struct.dataclass
class BlockMemory:
    """One layer's inference state: the current window and the memory blocks.

    Attributes:
      window_k_BxWxHkvxd: keys (without RoPE) of the window's positions written so far; the
        rest is ignored (causal masking).
      window_v_BxWxHkvxd: values, same layout.
      keys_BxExPxHkvxd: memory block keys without RoPE: the whole memory (E = capacity), or,
        with a precomputed ``selection``, only the rows it uses.
      values_BxExPxHkvxd: memory block values.
      landmarks_BxExHkvxd: landmark keys (without RoPE) of the whole memory, for selection; None
        with a precomputed ``selection``.
      selection: the blocks chosen beforehand (host offload), or None to choose here.
    """

    window_k_BxWxHkvxd: jax.Array
    window_v_BxWxHkvxd: jax.Array
    keys_BxExPxHkvxd: jax.Array
    values_BxExPxHkvxd: jax.Array
    landmarks_BxExHkvxd: jax.Array | None = None
    selection: BlockSelection | None = None


@struct.dataclass
class WindowStep:
    """Where the new positions sit, shared by every layer.

    Attributes:
      offset: int32 scalar, window offset of the first new position.
      num_blocks: int32 scalar, n = complete memory blocks (rows 0..n-1 are valid).
    """

    offset: jax.Array
    num_blocks: jax.Array


def _grouped(x_BxQxHxd: jax.Array, kv_heads: int) -> jax.Array:
    """(B, Q, H, d) -> (B, Q, Hkv, G, d): query head h reads kv head h // G."""
    b, q, h, d = x_BxQxHxd.shape
    return x_BxQxHxd.reshape(b, q, kv_heads, h // kv_heads, d)


def select_blocks(
    q_BxQxHxd: jax.Array,
    landmarks_BxExHkvxd: jax.Array,
    step: WindowStep,
    *,
    top_k: int,
    block_len: int,
    theta: float,
) -> BlockSelection:
    """Top-K memory blocks per batch element, head and query by q . landmark (module docstring).

    Args:
      q_BxQxHxd: queries without RoPE of Q consecutive positions from ``step.offset``.
      landmarks_BxExHkvxd: landmark keys without RoPE, E >= K rows (rows >= n never chosen).
      step: window offset and memory size n.
      top_k: K.
      block_len: P.
      theta: RoPE base.

    Returns:
      The selection, K blocks per query and head, ascending by block index.
    """
    b, nq, h, d = q_BxQxHxd.shape
    e, hkv = landmarks_BxExHkvxd.shape[1], landmarks_BxExHkvxd.shape[2]
    p, n = block_len, step.num_blocks
    k_eff = jnp.minimum(top_k, n)
    qpos_Q = step.offset + jnp.arange(nq, dtype=jnp.int32)
    q_BxQxKxGxd = _grouped(q_BxQxHxd, hkv)

    def logits(q_rot, keys_BxNxHkvxd):
        return jnp.einsum(
            "bqkgd,bnkd->bqkgn", q_rot, keys_BxNxHkvxd, preferred_element_type=jnp.float32
        )

    # Older blocks: every landmark at -k * P - 1, so rotate the query by the difference instead.
    rel_Qx1x1 = (qpos_Q + k_eff * p + 1).reshape(nq, 1, 1)
    s_BxQxKxGxE = logits(rope_at(q_BxQxKxGxd, rel_Qx1x1, theta), landmarks_BxExHkvxd)
    # The K latest rows (the k most recent blocks, or rows >= n masked below): true positions.
    start = jnp.maximum(n - top_k, 0)
    recent_BxKxHkvxd = jax.lax.dynamic_slice_in_dim(landmarks_BxExHkvxd, start, top_k, axis=1)
    rows_K = start + jnp.arange(top_k, dtype=jnp.int32)
    recent_rot = rope_at(recent_BxKxHkvxd, ((rows_K - n) * p + p - 1).reshape(top_k, 1), theta)
    q_rot = rope_at(q_BxQxKxGxd, qpos_Q.reshape(nq, 1, 1), theta)
    s_BxQxKxGxE = jax.lax.dynamic_update_slice_in_dim(
        s_BxQxKxGxE, logits(q_rot, recent_rot), start, axis=4
    )
    s_BxQxKxGxE = jnp.where(jnp.arange(e).reshape(1, 1, 1, 1, e) < n, s_BxQxKxGxE, -jnp.inf)
    _, idx = jax.lax.top_k(s_BxQxKxGxE.reshape(b, nq, h, e), top_k)
    idx_BxQxHxK = jnp.sort(idx, axis=-1).astype(jnp.int32)
    rank_K = jnp.arange(top_k, dtype=jnp.int32).reshape(1, 1, 1, top_k)
    is_recent = idx_BxQxHxK >= n - k_eff
    return BlockSelection(
        idx_BxQxHxK=idx_BxQxHxK,
        slot_BxQxHxK=rank_K + is_recent.astype(jnp.int32) - (k_eff + 1),
        valid_BxQxHxK=idx_BxQxHxK < n,
    )


def _past_blocks(s_xP: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Landmark logit (slot P - 1) and the in-block softmax over the other P - 1 keys."""
    p = s_xP.shape[-1]
    is_lmk = (jnp.arange(p) == p - 1).reshape((1,) * (s_xP.ndim - 1) + (p,))
    return s_xP[..., p - 1], jax.nn.softmax(jnp.where(is_lmk, -jnp.inf, s_xP), axis=-1)


def attend_window(
    q_BxQxHxd: jax.Array,
    qpos_Q: jax.Array,
    memory: BlockMemory,
    selection: BlockSelection,
    *,
    block_len: int,
    theta: float,
) -> jax.Array:
    """Grouped softmax of Q queries over retrieved blocks + the window (module docstring).

    Args:
      q_BxQxHxd: queries without RoPE at window offsets ``qpos_Q``.
      qpos_Q: int32 window offsets of the queries.
      memory: the window (with the queries' own keys written) and the memory blocks.
      selection: K blocks per query and head, rows of ``memory.keys``.
      block_len: P.
      theta: RoPE base.

    Returns:
      (B, Q, H, d) float32.
    """
    b, nq, h, d = q_BxQxHxd.shape
    p, scale = block_len, d**-0.5
    w, hkv = memory.window_k_BxWxHkvxd.shape[1], memory.window_k_BxWxHkvxd.shape[2]
    g, c = h // hkv, w // p
    q_BxQxKxGxd = rope_at(_grouped(q_BxQxHxd, hkv), qpos_Q.reshape(nq, 1, 1), theta)
    # Retrieved blocks: gather per query and head, re-rotate at slot * P + u.
    sel = jax.tree.map(lambda a: a.reshape(b, nq, hkv, g, -1), selection)
    bi = jnp.arange(b).reshape(b, 1, 1, 1, 1)
    hi = jnp.arange(hkv).reshape(1, 1, hkv, 1, 1)
    mem_k = memory.keys_BxExPxHkvxd[bi, sel.idx_BxQxHxK, :, hi]  # (B, Q, Hkv, G, K, P, d)
    mem_v = memory.values_BxExPxHkvxd[bi, sel.idx_BxQxHxK, :, hi].astype(jnp.float32)
    pos_BxQxKxGxKxP = sel.slot_BxQxHxK[..., None] * p + jnp.arange(p).reshape(1, 1, 1, 1, 1, p)
    mem_k = rope_at(mem_k, pos_BxQxKxGxKxP, theta)
    s_mem = jnp.einsum("bqkgd,bqkgnpd->bqkgnp", q_BxQxKxGxd, mem_k,
                       preferred_element_type=jnp.float32) * scale  # fmt: skip
    lmk_mem, inner_mem = _past_blocks(s_mem)  # (B, Q, Hkv, G, K), (..., K, P)
    o_mem = jnp.einsum("bqkgnp,bqkgnpd->bqkgnd", inner_mem, mem_v)
    lmk_mem = jnp.where(sel.valid_BxQxHxK, lmk_mem, -jnp.inf)
    # The window: past blocks through their landmarks, the own block's earlier raw tokens.
    win_k = rope_at(memory.window_k_BxWxHkvxd, jnp.arange(w).reshape(w, 1), theta)
    win_v = memory.window_v_BxWxHkvxd.astype(jnp.float32).reshape(b, c, p, hkv, d)
    s_win = jnp.einsum("bqkgd,bwkd->bqkgw", q_BxQxKxGxd, win_k,
                       preferred_element_type=jnp.float32) * scale  # fmt: skip
    s_win = s_win.reshape(b, nq, hkv, g, c, p)
    lmk_win, inner_win = _past_blocks(s_win)  # (B, Q, Hkv, G, C), (..., C, P)
    o_win = jnp.einsum("bqkgcp,bcpkd->bqkgcd", inner_win, win_v)
    # Key t of the window: own-block raw token if t // P == i // P, t <= i, not a landmark.
    t_1xW, qpos_Qx1 = jnp.arange(w).reshape(1, w), qpos_Q.reshape(nq, 1)
    own_QxW = (t_1xW // p == qpos_Qx1 // p) & (t_1xW <= qpos_Qx1) & (t_1xW % p != p - 1)
    past_QxC = jnp.arange(c).reshape(1, c) < qpos_Qx1 // p
    own_s = jnp.where(own_QxW.reshape(1, nq, 1, 1, w), s_win.reshape(b, nq, hkv, g, w), -jnp.inf)
    lmk_win = jnp.where(past_QxC.reshape(1, nq, 1, 1, c), lmk_win, -jnp.inf)
    top = jax.nn.softmax(jnp.concatenate([lmk_mem, lmk_win, own_s], axis=-1), axis=-1)
    k = lmk_mem.shape[-1]
    p_mem, p_lmk, p_own = top[..., :k], top[..., k : k + c], top[..., k + c :]
    o = (
        jnp.einsum("bqkgn,bqkgnd->bqkgd", p_mem, o_mem)
        + jnp.einsum("bqkgc,bqkgcd->bqkgd", p_lmk, o_win)
        + jnp.einsum("bqkgw,bwkd->bqkgd", p_own, win_v.reshape(b, w, hkv, d))
    )
    return o.reshape(b, nq, h, d)


def windowed_attention(
    q_BxQxHxd: jax.Array,
    k_BxQxHkvxd: jax.Array,
    v_BxQxHkvxd: jax.Array,
    memory: BlockMemory,
    step: WindowStep,
    *,
    top_k: int,
    block_len: int,
    theta: float,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Q new positions (keys and queries without RoPE) against the window and memory.

    The new keys/values are written into the window at ``step.offset``; queries run in blocks
    of P (a ``lax.map``) when Q is a multiple of P larger than P, so the selection logits
    (P, H, E) and the gathered blocks (P, H, K, P, d) of one block are the largest arrays.

    Returns:
      ((B, Q, H, d) float32, (window keys, window values) with the new positions written).
    """
    b, nq, h, d = q_BxQxHxd.shape
    p = block_len
    index = (0, step.offset, 0, 0)
    win_k = jax.lax.dynamic_update_slice(memory.window_k_BxWxHkvxd, k_BxQxHkvxd.astype(
        memory.window_k_BxWxHkvxd.dtype), index)  # fmt: skip
    win_v = jax.lax.dynamic_update_slice(memory.window_v_BxWxHkvxd, v_BxQxHkvxd.astype(
        memory.window_v_BxWxHkvxd.dtype), index)  # fmt: skip
    memory = memory.replace(window_k_BxWxHkvxd=win_k, window_v_BxWxHkvxd=win_v)
    qpos_Q = step.offset + jnp.arange(nq, dtype=jnp.int32)

    def one(q_blk, qpos_blk, sel_blk):
        if sel_blk is None:
            blk_step = WindowStep(offset=qpos_blk[0], num_blocks=step.num_blocks)
            sel_blk = select_blocks(
                q_blk, memory.landmarks_BxExHkvxd, blk_step,
                top_k=top_k, block_len=p, theta=theta,
            )  # fmt: skip
        return attend_window(q_blk, qpos_blk, memory, sel_blk, block_len=p, theta=theta)

    if nq <= p or nq % p:
        return one(q_BxQxHxd, qpos_Q, memory.selection), (win_k, win_v)
    nb = nq // p

    def blocks(x):  # (B, Q, ...) -> (Q / P, B, P, ...)
        return jnp.moveaxis(x.reshape(x.shape[0], nb, p, *x.shape[2:]), 1, 0)

    sel = None if memory.selection is None else jax.tree.map(blocks, memory.selection)
    o_NxBxPxHxd = jax.lax.map(lambda xs: one(*xs), (blocks(q_BxQxHxd), qpos_Q.reshape(nb, p), sel))
    return jnp.moveaxis(o_NxBxPxHxd, 0, 1).reshape(b, nq, h, d), (win_k, win_v)


def select_in_blocks(q_BxQxHxd, landmarks_BxExHkvxd, step: WindowStep, *, top_k, block_len,
                     theta) -> BlockSelection:  # fmt: skip
    """``select_blocks`` over Q queries, P at a time when Q is a multiple of P (bounded logits)."""
    b, nq = q_BxQxHxd.shape[:2]
    p = block_len
    kw = dict(top_k=top_k, block_len=p, theta=theta)
    if nq <= p or nq % p:
        return select_blocks(q_BxQxHxd, landmarks_BxExHkvxd, step, **kw)
    nb = nq // p
    q_NxBxPxHxd = jnp.moveaxis(q_BxQxHxd.reshape(b, nb, p, *q_BxQxHxd.shape[2:]), 1, 0)
    offsets_N = step.offset + p * jnp.arange(nb, dtype=jnp.int32)

    def one(xs):
        q_blk, off = xs
        return select_blocks(q_blk, landmarks_BxExHkvxd, step.replace(offset=off), **kw)

    sel = jax.lax.map(one, (q_NxBxPxHxd, offsets_N))
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1).reshape(b, nq, *a.shape[3:]), sel)
