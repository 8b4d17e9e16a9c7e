"""Segmented prefill of DRT over arbitrarily long inputs, bounded device memory (docs/spec.md §3.4).

A sequence of T raw tokens (left-padded to a multiple of S, see ``pad_left``) runs in segments
of ``segment_chunks`` chunks. Per segment, four jitted steps run (each compiled once per
segment shape; the first segment and a shorter last one add one shape each):

1. ``lower``: embed, lower layers (each layer's SWA also sees the previous W positions' K/V,
   carried from the last segment), chunk encoder -> the segment's new memory rows;
   the rows are appended to the ``ChunkStore`` (device, or host with ``offload``);
2. per group g, ``retrieve``: rows of the segment's chunks against the whole memory (global
   row ids, strict mask e < row), then the one-chunk lag with ``first`` = the last row of the
   previous segment. The original drops that row and gives the first chunk of every segment
   zero GCA (docs/spec.md §3.4, §9.9); here a segmented forward equals the unsegmented one;
3. per group g, ``group``: the upper layers, GCA reading only the union of the rows the
   segment retrieved, gathered on the device (``compact_rows``) or, with offload, on host;
4. ``head``: final norm, then only what was asked: logits at chosen raw positions and/or the
   next-token cross-entropy sums (never the (T, V) logits of the whole sequence).
"""

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.inference.decode import Decoder
from gca_jax.inference.memory import Carry, ChunkStore, compact_rows
from gca_jax.modeling import PREFILL, require
from gca_jax.modeling import retrieval as ret_lib
from gca_jax.modeling.cache import WindowCache
from gca_jax.modeling.chunking import IGNORE
from gca_jax.modeling.layers import to_dtype
from gca_jax.modeling.loss import blocked_cross_entropy, tied_logits
from gca_jax.modeling.retrieval import Retrieval
from gca_jax.modeling.stack import apply_stack

_log = logging.getLogger(__name__)


def pad_left(tokens_BxT: np.ndarray, chunk_len: int, pad_id: int) -> tuple[np.ndarray, int]:
    """Left-pads with ``pad_id`` to a multiple of S, as the original generation (docs/spec.md §3.2).

    The pads are ordinary (attended) positions; they are never scored. Returns (tokens, pad).
    """
    pad = (-tokens_BxT.shape[1]) % chunk_len
    return np.pad(tokens_BxT, ((0, 0), (pad, 0)), constant_values=pad_id), pad


@dataclasses.dataclass
class PrefillOutput:
    """Results of ``Engine.prefill``; positions are those of the unpadded input.

    Attributes:
      logits: (B, Q, V) float32 at the requested positions, or None.
      ce_sum: (B,) summed next-token CE (nats) over scored targets, or None.
      ce_count: (B,) number of scored targets, or None.
      carry: the state for decoding (``keep_state``), else None.
      retrievals: per group, query-aligned (idx, w) each (B, C, K) (``record``), else None.
      pad: left padding added.
    """

    logits: np.ndarray | None
    ce_sum: np.ndarray | None
    ce_count: np.ndarray | None
    carry: Carry | None
    retrievals: list | None
    pad: int


def query_positions(logits_at, b: int, t: int) -> np.ndarray:
    """Validates raw positions (Q,) or (B, Q) and returns them as int32 (B, Q)."""
    q = np.asarray(logits_at)
    if q.ndim == 1:
        q = np.broadcast_to(q.reshape(1, -1), (b, q.shape[0]))
    if q.ndim != 2 or q.shape[0] != b or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"logits_at must be int positions (Q,) or (B={b}, Q), got {q.shape}")
    if q.size and (q.min() < 0 or q.max() >= t):
        raise ValueError(f"logits_at positions must be in [0, T={t}), got {q.min()}..{q.max()}")
    return q.astype(np.int32)


# -- jitted step bodies (graphdef bound with functools.partial) --------------------------------


def _lower_step(graphdef, params, tokens_BxT, cache: WindowCache):
    model = nnx.merge(graphdef, params)
    rcfg = model.cfg.retrieval
    b, t = tokens_BxT.shape
    c = t // rcfg.chunk_len
    h_BxLxD, cache = apply_stack(model.lower, model.embed_chunks(tokens_BxT), cache=cache)
    rows = model.build_memory(h_BxLxD.reshape(b, c, rcfg.slots_per_chunk, -1), tokens_BxT)
    return h_BxLxD, cache, rows


def _retrieve_step(graphdef, params, h_BxLxD, landmarks_BxExD, first_chunk, first, *, group):
    model = nnx.merge(graphdef, params)
    b, length, dim = h_BxLxD.shape
    p = model.cfg.retrieval.slots_per_chunk
    c = length // p
    row_ids_C = first_chunk + jnp.arange(c, dtype=jnp.int32)
    rows = model.retrieve(group, h_BxLxD.reshape(b, c, p, dim), landmarks_BxExD, row_ids_C)
    last = Retrieval(idx=rows.idx[:, -1:], w=rows.w[:, -1:])
    return ret_lib.lag_one_chunk(rows, first=first), last


def _group_step(graphdef, params, h_BxLxD, cache, memory, ret, *, group, compact):
    model = nnx.merge(graphdef, params)
    if compact:
        memory, ret = compact_rows(memory, ret)
    return apply_stack(model.groups[group], h_BxLxD, memory, ret, cache=cache)


def _head_step(graphdef, params, h_BxLxD, targets_BxN, query_BxQ, *, with_ce):
    model = nnx.merge(graphdef, params)
    cfg = model.cfg
    b, length, dim = h_BxLxD.shape
    p, s = cfg.retrieval.slots_per_chunk, cfg.retrieval.chunk_len
    c = length // p
    h_BxNxD = model.final_norm(h_BxLxD).reshape(b, c, p, dim)[:, :, :s].reshape(b, c * s, dim)
    table_VxD = model.embed.table[...]
    totals_B = counts_B = None
    if with_ce:
        ce = functools.partial(blocked_cross_entropy, table_VxD=table_VxD, block=cfg.loss_block)
        totals_B, counts_B = jax.vmap(lambda h, t: ce(h, targets_N=t))(h_BxNxD, targets_BxN)
    q_BxQ = jnp.clip(query_BxQ, 0, c * s - 1)
    h_BxQxD = jnp.take_along_axis(h_BxNxD, q_BxQ.reshape(b, -1, 1), axis=1)
    return totals_B, counts_B, tied_logits(h_BxQxD, table_VxD)


class Engine:
    """Jitted inference steps of one chunk-memory model: segmented prefill, and decoding.

    Args:
      model: a model whose class declares the ``prefill`` capability (DRT).
      segment_chunks: chunks per prefill segment; segment_chunks * P must be >= W.
      offload: keep chunk K/V in host memory (landmarks stay on the device).

    Raises:
      MissingCapabilityError: the model does not support segmented prefill.
      ValueError: a model without chunk memory, full attention (window -1), or segments
        shorter than W.
    """

    def __init__(self, model: nnx.Module, *, segment_chunks: int = 256, offload: bool = False):
        cfg = model.cfg
        require(cfg, PREFILL)
        rcfg = cfg.retrieval
        if rcfg is None:
            raise ValueError(
                f"Engine serves chunk-memory models (model.retrieval); model_type="
                f"{cfg.model_type!r} has its own engine (gca_jax.inference.make_scorer picks it)"
            )
        if cfg.window < 1:
            raise ValueError(f"model.window={cfg.window} must be >= 1 for segmented inference")
        if segment_chunks < 1 or segment_chunks * rcfg.slots_per_chunk < cfg.window:
            raise ValueError(
                f"{segment_chunks=} must be >= 1 and segment_chunks * P = "
                f"{segment_chunks * rcfg.slots_per_chunk} must be >= window W={cfg.window}"
            )
        self.cfg, self.rcfg = cfg, rcfg
        self.segment_chunks, self.offload = segment_chunks, offload
        self.landmark_dim = model.landmark_dim  # width of the retrieval keys the store holds
        self.graphdef, self.params = nnx.split(model)
        self.compute_dtype = to_dtype(cfg.dtype)
        bind = functools.partial
        self._lower = jax.jit(bind(_lower_step, self.graphdef), donate_argnums=(2,))
        self._retrieve = jax.jit(bind(_retrieve_step, self.graphdef), static_argnames=("group",))
        self._group = jax.jit(
            bind(_group_step, self.graphdef),
            static_argnames=("group", "compact"),
            donate_argnums=(2,),
        )
        self._head = jax.jit(bind(_head_step, self.graphdef), static_argnames=("with_ce",))

    # -- generation (the engine protocol of gca_jax.inference.scoring) --------------------------

    @property
    def prompt_multiple(self) -> int:
        """Prompts are left-padded to a multiple of S (docs/spec.md §3.2)."""
        return self.rcfg.chunk_len

    def start_decoding(self, tokens_BxT, max_new_tokens: int):
        """Prefills left-padded prompts (T a multiple of S) and returns (logits_BxV, decoder).

        The memory holds the prompt's chunks and those ``max_new_tokens`` more can complete.
        """
        s = self.rcfg.chunk_len
        capacity = (tokens_BxT.shape[1] + max_new_tokens) // s + 1
        out = self.prefill(
            tokens_BxT, logits_at=[tokens_BxT.shape[1] - 1], keep_state=True, capacity=capacity
        )
        return jnp.asarray(out.logits[:, 0]), Decoder(self, out.carry)

    # -- state ---------------------------------------------------------------------------------

    def top_k(self, capacity: int) -> int:
        """K_eff = min(K, E) retrieved chunks per row (docs/spec.md §1.8)."""
        return min(self.rcfg.top_k, capacity)

    def empty_carry(self, batch: int, capacity: int) -> Carry:
        """The state before any token: empty caches and an empty memory of ``capacity`` rows."""
        cfg, rcfg = self.cfg, self.rcfg
        shape = (batch, cfg.window, cfg.num_kv_heads, cfg.head_dim)
        caches = [
            WindowCache.empty(shape, self.compute_dtype, layers=n) for n in self.stack_layers()
        ]
        store = ChunkStore.allocate(
            batch=batch,
            capacity=capacity,
            dim=self.landmark_dim,
            slots=rcfg.memory_slots,
            kv_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            dtype=self.compute_dtype,
            offload=self.offload,
        )
        k = self.top_k(capacity)
        empty = Retrieval(idx=jnp.zeros((batch, 1, k), jnp.int32), w=jnp.zeros((batch, 1, k)))
        return Carry(caches, store, [empty] * rcfg.num_groups, 0)

    def stack_layers(self) -> list[int]:
        """Layers per stack: the lower stack, then each retrieval group's."""
        groups = list(self.rcfg.group_layers)
        return [self.cfg.num_layers - sum(groups), *groups]

    # -- prefill -------------------------------------------------------------------------------

    def prefill(
        self,
        tokens_BxT,
        *,
        logits_at=None,
        with_ce: bool = False,
        capacity: int | None = None,
        carry: Carry | None = None,
        keep_state: bool = False,
        record: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> PrefillOutput:
        """Runs the model over ``tokens_BxT`` segment by segment.

        Args:
          tokens_BxT: int token ids, T >= 1; left-padded with pad_id to a multiple of S.
          logits_at: raw positions (Q,) or (B, Q) whose next-token logits to return.
          with_ce: also return the next-token CE sums over all positions.
          capacity: memory rows to allocate (default: the input's chunks).
          carry: continue after an earlier prefill (then the input must be a multiple of S).
          keep_state: return the carry, for decoding.
          record: return the query-aligned retrieval of every chunk and group.
          progress: called with the number of raw tokens after each segment.

        Returns:
          A ``PrefillOutput``.

        Raises:
          ValueError: empty or non-2-D input, positions out of range, capacity too small.
        """
        cfg, rcfg = self.cfg, self.rcfg
        tokens = np.asarray(tokens_BxT)
        if tokens.ndim != 2 or tokens.shape[1] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty (B, T) int array, got {tokens.shape}")
        b, t = tokens.shape
        targets = np.concatenate([tokens[:, 1:], np.full((b, 1), IGNORE)], axis=1)
        targets = np.where(targets < 0, IGNORE, targets)
        tokens, pad = pad_left(tokens.astype(np.int32), rcfg.chunk_len, cfg.pad_id)
        if carry is not None and (pad or 0 < carry.num_positions < cfg.window):
            raise ValueError(
                f"a continued prefill needs T={t} to be a multiple of S={rcfg.chunk_len} and at "
                f"least W={cfg.window} earlier positions, got {carry.num_positions}"
            )
        targets = np.pad(targets, ((0, 0), (pad, 0)), constant_values=IGNORE).astype(np.int32)
        queries = None if logits_at is None else query_positions(logits_at, b, t) + pad
        num_chunks = tokens.shape[1] // rcfg.chunk_len
        if carry is None:
            carry = self.empty_carry(b, capacity or num_chunks)
        if carry.store.num_chunks + num_chunks > carry.store.capacity:
            raise ValueError(
                f"memory capacity {carry.store.capacity} < {carry.store.num_chunks} + {num_chunks}"
            )
        logits = (
            None if queries is None else np.zeros(queries.shape + (cfg.vocab_size,), np.float32)
        )
        ce_sum, ce_count = np.zeros((b,)), np.zeros((b,), np.int64)
        recorded = [[] for _ in range(rcfg.num_groups)]
        s = rcfg.chunk_len
        for c0 in range(0, num_chunks, self.segment_chunks):
            c1 = min(c0 + self.segment_chunks, num_chunks)
            h = self._run_segment(carry, tokens[:, c0 * s : c1 * s], recorded if record else None)
            carry.num_positions += (c1 - c0) * rcfg.slots_per_chunk
            self._score(h, targets, queries, c0 * s, c1 * s, with_ce, logits, ce_sum, ce_count)
            if progress is not None:
                progress((c1 - c0) * s - (pad if c0 == 0 else 0))
        retrievals = None
        if record:
            retrievals = [
                (np.concatenate([r.idx for r in rs], 1), np.concatenate([r.w for r in rs], 1))
                for rs in recorded
            ]
        return PrefillOutput(
            logits=logits,
            ce_sum=ce_sum if with_ce else None,
            ce_count=ce_count if with_ce else None,
            carry=carry if keep_state else None,
            retrievals=retrievals,
            pad=pad,
        )

    def _run_segment(self, carry: Carry, tokens_BxT: np.ndarray, recorded: list | None):
        """Lower stack, memory append, then per group retrieval and upper layers; returns h."""
        h, carry.caches[0], rows = self._lower(
            self.params, jnp.asarray(tokens_BxT), carry.caches[0]
        )
        first_chunk = carry.store.num_chunks
        carry.store.append(rows)
        for g in range(self.rcfg.num_groups):
            ret, carry.last_rows[g] = self._retrieve(
                self.params,
                h,
                carry.store.landmarks,
                jnp.int32(first_chunk),
                carry.last_rows[g],
                group=g,
            )
            if recorded is not None:
                recorded[g].append(jax.device_get(ret))
            if self.offload:
                memory, idx = carry.store.gather_union(ret.idx)
                ret, compact = Retrieval(idx=idx, w=ret.w), False
            else:
                memory = carry.store.device_memory()
                compact = carry.store.capacity > ret.idx.shape[1] * ret.idx.shape[2]
            h, carry.caches[1 + g] = self._group(
                self.params,
                h,
                carry.caches[1 + g],
                memory,
                ret,
                group=g,
                compact=compact,
            )
        return h

    def _score(self, h, targets, queries, start, stop, with_ce, logits, ce_sum, ce_count):
        """Runs the head on one segment and accumulates what was asked."""
        b = targets.shape[0]
        in_seg = None if queries is None else (queries >= start) & (queries < stop)
        if not with_ce and (in_seg is None or not in_seg.any()):
            return
        q = np.zeros((b, 0), np.int32) if in_seg is None else queries - start
        totals, counts, seg_logits = self._head(
            self.params, h, jnp.asarray(targets[:, start:stop]), jnp.asarray(q), with_ce=with_ce
        )
        if with_ce:
            ce_sum += np.asarray(totals, np.float64)
            ce_count += np.asarray(counts, np.int64)
        if in_seg is not None and in_seg.any():
            seg_logits = np.asarray(seg_logits)
            logits[in_seg] = seg_logits[in_seg]
