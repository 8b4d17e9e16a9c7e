"""Chunk memory and causal retrieval (docs/spec.md §1.7-1.8): pure functions, no parameters.

Index example for the one-chunk lag, C = 5 chunks, top_k = 2:

    row r (from chunk r's landmark) may select memory rows e < r:
      row 0: none   row 1: {0}   row 2: {0, 1}   row 3: {0, 1, 2}   row 4: unused in training
    query chunk c uses row c - 1, so chunk c attends to rows e <= c - 2:
      chunk 0: nothing (w = 0)   chunk 1: row 0 -> nothing (w = 0)   chunk 2: {0}
      chunk 3: {0, 1}            chunk 4: top-2 of {0, 1, 2}
The chunk just before c is never retrieved: it is inside the sliding window.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ChunkMemory:
    """Retrieval keys and per-chunk K/V of every encoded chunk (docs/architecture.md, "Contracts").

    Attributes:
      landmarks: (B, E, D) encoder output at each chunk's landmark slot; None for a memory that
        holds only retrieved rows (what GCA reads: it never reads landmarks).
      keys: (B, E, P', H, d) chunk keys, P' memory slots per chunk.
      values: (B, E, P', H, d) chunk values.
    """

    landmarks: jax.Array | None
    keys: jax.Array
    values: jax.Array


@dataclasses.dataclass(frozen=True)
class Retrieval:
    """What a set of query chunks attends to: ``idx`` (B, C, K) int32 rows, ``w`` (B, C, K)."""

    idx: jax.Array
    w: jax.Array


jax.tree_util.register_dataclass(Retrieval, data_fields=["idx", "w"], meta_fields=[])


def retrieval_scores(query_BxCxD: jax.Array, landmarks_BxExD: jax.Array) -> jax.Array:
    """s[b, c, e] = <q_c, l_e> / sqrt(D), in float32 (docs/spec.md §1.8)."""
    d = query_BxCxD.shape[-1]
    s = jnp.einsum(
        "BCD,BED->BCE", query_BxCxD.astype(jnp.float32), landmarks_BxExD.astype(jnp.float32)
    )
    return s / jnp.sqrt(jnp.float32(d))


def causal_mask(row_ids_C: jax.Array, num_chunks: int) -> jax.Array:
    """(C, E) True where row c may score memory row e: strictly earlier chunks, e < id(c)."""
    return jnp.arange(num_chunks)[None, :] < row_ids_C[:, None]


def safe_masked_softmax(s_xK: jax.Array, valid_xK: jax.Array) -> jax.Array:
    """Softmax over valid entries; all-invalid rows give 0, finite gradients (docs/spec.md §1.8)."""
    s_max = jnp.max(jnp.where(valid_xK, s_xK, -jnp.inf), axis=-1, keepdims=True)
    s_max = jnp.where(jnp.isfinite(s_max), s_max, 0.0)
    e = jnp.where(valid_xK, jnp.exp(jnp.where(valid_xK, s_xK - s_max, 0.0)), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)


def select_rows(
    scores_BxCxE: jax.Array, valid_CxE: jax.Array, *, top_k: int, gumbel_key: jax.Array | None
) -> Retrieval:
    """Top-k memory rows per retrieval row, with weights over the noise-free scores.

    Args:
      scores_BxCxE: float32 retrieval scores.
      valid_CxE: causal mask (True = may be selected).
      top_k: K; at most E rows can be selected (K_eff = min(K, E)).
      gumbel_key: PRNG key for Gumbel-top-k sampling in training; None = plain top-k (eval).
        The noise changes which rows are selected, never the weights.

    Returns:
      Row-aligned Retrieval with K_eff columns; invalid picks get weight 0.
    """
    b, c, e = scores_BxCxE.shape
    k = min(top_k, e)
    valid_BxCxE = jnp.broadcast_to(valid_CxE[None], (b, c, e))
    masked = jnp.where(valid_BxCxE, scores_BxCxE, -jnp.inf)
    if gumbel_key is not None:
        masked = masked + jax.random.gumbel(gumbel_key, masked.shape, jnp.float32)
    _, idx_BxCxK = jax.lax.top_k(jax.lax.stop_gradient(masked), k)
    picked_s = jnp.take_along_axis(scores_BxCxE, idx_BxCxK, axis=-1)
    picked_valid = jnp.take_along_axis(valid_BxCxE, idx_BxCxK, axis=-1)
    w_BxCxK = safe_masked_softmax(picked_s, picked_valid)
    return Retrieval(idx=idx_BxCxK.astype(jnp.int32), w=w_BxCxK)


def lag_one_chunk(rows: Retrieval, first: Retrieval | None = None) -> Retrieval:
    """Aligns retrieval rows to query chunks: chunk c uses row c - 1 (docs/spec.md §1.8).

    Args:
      rows: row-aligned retrieval for C rows.
      first: the row serving the first query chunk (the last row of the previous segment in
        segmented inference, shape (B, 1, K)); None gives chunk 0 nothing (w = 0).

    Returns:
      Query-aligned Retrieval for the same C chunks.
    """
    if first is None:
        first = Retrieval(idx=jnp.zeros_like(rows.idx[:, :1]), w=jnp.zeros_like(rows.w[:, :1]))
    return Retrieval(
        idx=jnp.concatenate([first.idx, rows.idx[:, :-1]], axis=1),
        w=jnp.concatenate([first.w, rows.w[:, :-1]], axis=1),
    )


def force_rows(rows: Retrieval, target_B: jax.Array, row_ids_C: jax.Array) -> Retrieval:
    """Oracle retrieval, for diagnostics: rows after chunk ``target_B[b]`` pick only that chunk.

    The target goes to slot 0 with weight 1, the other slots get weight 0; rows at or before the
    target (where it is not a valid, strictly earlier pick) are unchanged.
    """
    use_BxC = row_ids_C[None, :] > target_B[:, None]
    idx = rows.idx.at[:, :, 0].set(jnp.where(use_BxC, target_B[:, None], rows.idx[:, :, 0]))
    one_hot = jnp.zeros_like(rows.w).at[:, :, 0].set(1.0)
    return Retrieval(idx=idx, w=jnp.where(use_BxC[:, :, None], one_hot, rows.w))


def retrieval_stats(ret: Retrieval, query_ids_C: jax.Array) -> dict[str, jax.Array]:
    """Mean top weight, weight entropy and mean chunk distance over chunks that retrieve."""
    active_BxC = jnp.sum(ret.w, axis=-1) > 0
    n = jnp.maximum(jnp.sum(active_BxC), 1)
    top = jnp.max(ret.w, axis=-1)
    entropy = -jnp.sum(
        jnp.where(ret.w > 0, ret.w * jnp.log(jnp.where(ret.w > 0, ret.w, 1.0)), 0.0), axis=-1
    )
    dist = jnp.sum(ret.w * (query_ids_C[None, :, None] - ret.idx).astype(jnp.float32), axis=-1)
    mean = lambda x: jnp.sum(jnp.where(active_BxC, x, 0.0)) / n
    return {"ret_top_weight": mean(top), "ret_entropy": mean(entropy), "ret_distance": mean(dist)}
