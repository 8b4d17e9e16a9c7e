"""Token-by-token decoding with a ring-buffer KV cache and chunk memory (docs/spec.md §3.3).

Decode state per batch (all batch elements share one position; prompts are left-padded to a
common length that is a multiple of S):

- per layer, a sliding-window K/V ring buffer of N = W + 1 slots; position p lives in slot
  p % N, ``key_pos`` says which position each slot holds (-1 = empty);
- the lower-stack outputs of the chunk being decoded (B, P, D), and the residual stream entering
  each group at the latest position (G, B, D);
- per group, the current retrieval: weights (B, K) and the K retrieved chunks' K/V, already on
  the device (gathered once per chunk, from device or host memory).

When a chunk's S-th token has been fed, the landmark is fed too (the original feeds the pair in
one 2-token step), and the chunk completes: the encoder turns the buffered lower outputs into a
memory row, and each group computes the retrieval for the next chunk from the landmark's state
at its depth, *with* the group's landmark norm. The original omits that norm in decoding
(docs/spec.md §3.6, §9.2); here decoding and the batch forward use the same retrieval.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from gca_jax.inference.memory import Carry, ChunkStore
from gca_jax.inference.sampling import sampled_steps
from gca_jax.modeling import DECODE, require
from gca_jax.modeling.cache import DecodeStep, RingCache
from gca_jax.modeling.loss import tied_logits
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from gca_jax.modeling.stack import apply_stack


@struct.dataclass
class DecodeState:
    """Device-side decode state (a pytree; see the module docstring).

    Attributes:
      rings: per stack (lower, group 1, ...), a ``RingCache`` (layers, B, N, Hkv, d).
      key_pos_BxN: position held by each ring slot, -1 when empty.
      pos: int32 scalar, the next landmark-inserted position.
      chunk_h_BxPxD: lower-stack outputs of the current chunk.
      chunk_ids_BxP: token ids fed in the current chunk (its memory row may be keyed on them).
      group_h_GxBxD: residual stream entering each group at the latest position.
      ret_idx_GxBxK: memory rows of the current retrieval per group.
      ret_w_GxBxK: their weights.
      ret_kv: per group, (keys, values) of the retrieved chunks (B, K, P', Hkv, d).
    """

    rings: tuple
    key_pos_BxN: jax.Array
    pos: jax.Array
    chunk_h_BxPxD: jax.Array
    chunk_ids_BxP: jax.Array
    group_h_GxBxD: jax.Array
    ret_idx_GxBxK: jax.Array
    ret_w_GxBxK: jax.Array
    ret_kv: tuple


def _decode_step(graphdef, params, state: DecodeState, ids_B):
    model = nnx.merge(graphdef, params)
    rcfg = model.cfg.retrieval
    b = ids_B.shape[0]
    pos = state.pos
    slot = pos % state.key_pos_BxN.shape[1]
    key_pos_BxN = state.key_pos_BxN.at[:, slot].set(pos)
    step = DecodeStep(key_pos_BxN=key_pos_BxN, slot=slot, q_pos_B=jnp.full((b,), pos, jnp.int32))
    h_Bx1xD = model.embed(ids_B)[:, None]
    h_Bx1xD, ring = apply_stack(model.lower, h_Bx1xD, cache=state.rings[0], step=step)
    rings, group_h = [ring], []
    chunk_h = state.chunk_h_BxPxD.at[:, pos % rcfg.slots_per_chunk].set(h_Bx1xD[:, 0])
    chunk_ids = state.chunk_ids_BxP.at[:, pos % rcfg.slots_per_chunk].set(ids_B)
    for g in range(rcfg.num_groups):
        group_h.append(h_Bx1xD[:, 0])
        keys, values = state.ret_kv[g]
        # The K chunks of the current retrieval, already on the device (see UpperLayer).
        retrieved = ChunkMemory(landmarks=None, keys=keys, values=values)
        ret = Retrieval(idx=state.ret_idx_GxBxK[g], w=state.ret_w_GxBxK[g])
        h_Bx1xD, ring = apply_stack(
            model.groups[g], h_Bx1xD, retrieved, ret, cache=state.rings[1 + g], step=step
        )
        rings.append(ring)
    logits_BxV = tied_logits(model.final_norm(h_Bx1xD[:, 0]), model.embed.table[...])
    return logits_BxV, state.replace(
        rings=tuple(rings),
        key_pos_BxN=key_pos_BxN,
        pos=pos + 1,
        chunk_h_BxPxD=chunk_h,
        chunk_ids_BxP=chunk_ids,
        group_h_GxBxD=jnp.stack(group_h),
    )


def _decode_span(graphdef, params, state, ids_B, key, temperature, *, n, top_k, top_p):
    """Runs n decode steps with sampling in one call: the tokens of one chunk need no host step."""
    step = functools.partial(_decode_step, graphdef, params)
    return sampled_steps(step, state, ids_B, key, temperature, n=n, top_k=top_k, top_p=top_p)


def _encode_step(graphdef, params, chunk_h_BxPxD, chunk_ids_BxP):
    model = nnx.merge(graphdef, params)
    b, p, dim = chunk_h_BxPxD.shape
    tokens_BxS = chunk_ids_BxP[:, : model.cfg.retrieval.chunk_len]  # without the landmark
    return model.build_memory(chunk_h_BxPxD.reshape(b, 1, p, dim), tokens_BxS)


def _next_retrieval(graphdef, params, group_h_GxBxD, landmarks_BxExD, row_id):
    """Retrieval row ``row_id`` (the chunk just completed) of every group: (G, B, K) idx, w."""
    model = nnx.merge(graphdef, params)
    idx, w = [], []
    for g in range(model.cfg.retrieval.num_groups):
        h_Bx1x1xD = group_h_GxBxD[g].reshape(group_h_GxBxD.shape[1], 1, 1, -1)
        rows = model.retrieve(g, h_Bx1x1xD, landmarks_BxExD, row_id.reshape(1))
        idx.append(rows.idx[:, 0])
        w.append(rows.w[:, 0])
    return jnp.stack(idx), jnp.stack(w)


def ring_slots(num_positions: int, window: int) -> np.ndarray:
    """(N,) position each of the N = W + 1 ring slots holds after ``num_positions``, -1 = empty.

    Slot n holds the latest position p < p0 with p % N == n; only p >= p0 - W is cached (the
    slot of p0 - N = p0's own slot is empty until p0 is written).
    """
    n, p0 = window + 1, num_positions
    slot_pos_N = p0 - 1 - (p0 - 1 - np.arange(n)) % n
    return np.where(slot_pos_N >= max(0, p0 - window), slot_pos_N, -1)


def ring_from_window(cache_LxBxWxHkvxd, slot_pos_N, first_pos: int) -> jax.Array:
    """Places the cached last-W positions (first one ``first_pos``) into ring slots."""
    index_N = np.clip(slot_pos_N - first_pos, 0, cache_LxBxWxHkvxd.shape[2] - 1)
    ring = jnp.take(cache_LxBxWxHkvxd, jnp.asarray(index_N), axis=2)
    keep = jnp.asarray(slot_pos_N >= 0).reshape(1, 1, -1, 1, 1)
    return jnp.where(keep, ring, 0)


def _jitted(engine):
    """The engine's jitted decode functions, built once per engine and shared by its decoders."""
    fns = getattr(engine, "_decode_fns", None)
    if fns is None:
        bind = functools.partial
        fns = (
            jax.jit(bind(_decode_step, engine.graphdef), donate_argnums=(1,)),
            jax.jit(bind(_encode_step, engine.graphdef)),
            jax.jit(bind(_next_retrieval, engine.graphdef)),
            jax.jit(
                bind(_decode_span, engine.graphdef),
                static_argnames=("n", "top_k", "top_p"),
                donate_argnums=(1,),
            ),
        )
        engine._decode_fns = fns
    return fns


class Decoder:
    """A decoding session over a batch: feed tokens one at a time, get next-token logits.

    Build it from an engine, optionally after a prefill (``Decoder(engine, out.carry)``), or
    empty with a memory capacity (``Decoder(engine, batch=B, capacity=E)``). ``engine`` is the
    DRT ``Engine`` (``gca_jax.inference.engine``), whose ``start_decoding`` builds decoders.
    """

    def __init__(self, engine, carry: Carry | None = None, *, batch: int = 1, capacity: int = 1):
        cfg, rcfg = engine.cfg, engine.rcfg
        require(cfg, DECODE)
        self.engine, self.cfg, self.rcfg = engine, cfg, rcfg
        if carry is None:
            carry = engine.empty_carry(batch, capacity)
        if carry.num_positions % rcfg.slots_per_chunk:
            raise ValueError("a decoder starts at a chunk boundary (prefill a multiple of S)")
        self.store: ChunkStore = carry.store
        self.raw_tokens = carry.num_positions // rcfg.slots_per_chunk * rcfg.chunk_len
        self._step, self._encode, self._retrieve, self._span = _jitted(engine)
        self.state = self._initial_state(carry)

    def _initial_state(self, carry: Carry) -> DecodeState:
        cfg, rcfg = self.cfg, self.rcfg
        n, p0 = cfg.window + 1, carry.num_positions
        slot_pos_N = ring_slots(p0, cfg.window)
        b = self.store.landmarks.shape[0]
        rings = tuple(
            RingCache(
                ring_from_window(cache.k_BxWxHkvxd, slot_pos_N, p0 - cfg.window),
                ring_from_window(cache.v_BxWxHkvxd, slot_pos_N, p0 - cfg.window),
            )
            for cache in carry.caches
        )
        idx = jnp.stack([r.idx[:, 0] for r in carry.last_rows])
        w = jnp.stack([r.w[:, 0] for r in carry.last_rows])
        return DecodeState(
            rings=rings,
            key_pos_BxN=jnp.asarray(np.broadcast_to(slot_pos_N, (b, n)), jnp.int32),
            pos=jnp.int32(p0),
            chunk_h_BxPxD=jnp.zeros((b, rcfg.slots_per_chunk, cfg.hidden_size), jnp.float32),
            chunk_ids_BxP=jnp.zeros((b, rcfg.slots_per_chunk), jnp.int32),
            group_h_GxBxD=jnp.zeros((rcfg.num_groups, b, cfg.hidden_size), jnp.float32),
            ret_idx_GxBxK=idx,
            ret_w_GxBxK=w,
            ret_kv=tuple(self.store.take(idx[g]) for g in range(rcfg.num_groups)),
        )

    def feed(self, ids_B) -> jax.Array:
        """Feeds one token per batch element; returns (B, V) float32 next-token logits.

        After the S-th token of a chunk, the landmark is fed and the chunk is completed
        (memory row appended, retrieval for the next chunk computed and its K/V fetched).
        """
        ids_B = jnp.asarray(ids_B, jnp.int32).reshape(-1)
        logits_BxV, self.state = self._step(self.engine.params, self.state, ids_B)
        self._advance(1, ids_B.shape)
        return logits_BxV

    def span(self, remaining: int) -> int:
        """Tokens ``feed_sampled`` can take in one call: up to the end of the current chunk."""
        return min(remaining, self.rcfg.chunk_len - self.raw_tokens % self.rcfg.chunk_len)

    def feed_sampled(self, ids_B, key, n: int, *, top_k: int, temperature: float, top_p: float):
        """Feeds ``ids_B`` and n - 1 tokens sampled on the way; returns the n sampled, and the key.

        Equals n times ``feed`` then ``sample_next`` (with one key split per token), in one
        jitted call; n must be within ``span(n)``.
        """
        if not 1 <= n <= self.span(n):
            raise ValueError(f"{n=} must be in [1, span(n) = {self.span(n)}] (the chunk's end)")
        ids_B = jnp.asarray(ids_B, jnp.int32).reshape(-1)
        ids_BxN, self.state, key = self._span(
            self.engine.params, self.state, ids_B, key, temperature, n=n, top_k=top_k, top_p=top_p
        )
        self._advance(n, ids_B.shape)
        return ids_BxN, key

    def _advance(self, n: int, batch_shape) -> None:
        """Counts n fed tokens; at a chunk's end feeds its landmark and completes the chunk."""
        self.raw_tokens += n
        if self.raw_tokens % self.rcfg.chunk_len == 0:
            landmark_B = jnp.full(batch_shape, self.cfg.landmark_id, jnp.int32)
            _, self.state = self._step(self.engine.params, self.state, landmark_B)
            self._complete_chunk()

    def _complete_chunk(self) -> None:
        row_id = self.store.num_chunks
        rows = self._encode(self.engine.params, self.state.chunk_h_BxPxD, self.state.chunk_ids_BxP)
        self.store.append(rows)
        idx, w = self._retrieve(
            self.engine.params, self.state.group_h_GxBxD, self.store.landmarks, jnp.int32(row_id)
        )
        kv = tuple(self.store.take(idx[g]) for g in range(self.rcfg.num_groups))
        self.state = self.state.replace(ret_idx_GxBxK=idx, ret_w_GxBxK=w, ret_kv=kv)
