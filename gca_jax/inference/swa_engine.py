"""Segmented prefill and decoding of the sliding-window LM (``model_type: swa_lm``).

The decoder's only state is the last W positions' keys/values of every layer, so evaluation
needs constant device memory at any length (docs/inference.md, "The sliding-window LM"):

- ``prefill`` runs the sequence in segments of ``segment_chunks * 64`` tokens (the unit keeps
  ``eval.segment_chunks`` comparable with DRT's segments of chunks of 64 slots); each layer's
  attention sees the previous W positions through a ``WindowCache``, exactly as in the
  unsegmented forward, and the head computes only the logits asked for and the CE sums;
- decoding turns the caches into ``RingCache``s of N = W + 1 slots and feeds one token per
  jitted step (the ``DecodeStep`` the layers already take).

The layer maths is ``DecoderLayer``'s, called with a cache; nothing here re-implements it.
There is no chunk memory, so ``offload`` has nothing to move and is refused. A full-attention
LM (``window`` -1) is scored by one forward over the whole input and cannot decode.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.inference.decode import ring_from_window, ring_slots
from gca_jax.inference.engine import PrefillOutput, query_positions
from gca_jax.inference.full_forward import FullForwardScorer
from gca_jax.inference.sampling import sampled_steps
from gca_jax.modeling import PREFILL, require
from gca_jax.modeling.cache import DecodeStep, RingCache, WindowCache
from gca_jax.modeling.chunking import IGNORE
from gca_jax.modeling.layers import to_dtype
from gca_jax.modeling.loss import blocked_cross_entropy, tied_logits
from gca_jax.modeling.stack import apply_stack

SEGMENT_UNIT = 64  # tokens per ``segment_chunks`` unit
_NO_FULL_DECODE = (
    "decoding a full-attention LM (model.window=-1) needs a cache that grows with the context, "
    "which is not built; use a sliding window (model.window >= 1)"
)


def _segment_step(graphdef, params, tokens_BxS, cache, targets_BxS, query_BxQ, *, with_ce):
    """One segment: the stack with its window caches, then the requested head outputs."""
    model = nnx.merge(graphdef, params)
    h_BxSxD, cache = apply_stack(model.layers, model.embed(tokens_BxS), cache=cache)
    h_BxSxD = model.final_norm(h_BxSxD)
    table_VxD = model.embed.table[...]
    totals_B = counts_B = None
    if with_ce:
        ce = functools.partial(
            blocked_cross_entropy, table_VxD=table_VxD, block=model.cfg.loss_block
        )
        totals_B, counts_B = jax.vmap(lambda h, t: ce(h, targets_N=t))(h_BxSxD, targets_BxS)
    q_BxQ = jnp.clip(query_BxQ, 0, h_BxSxD.shape[1] - 1)
    h_BxQxD = jnp.take_along_axis(h_BxSxD, q_BxQ[:, :, None], axis=1)
    return cache, totals_B, counts_B, tied_logits(h_BxQxD, table_VxD)


def _decode_step(graphdef, params, rings, key_pos_BxN, pos, ids_B):
    """One token through every layer against the ring caches; (B, V) logits and the new state."""
    model = nnx.merge(graphdef, params)
    slot = pos % key_pos_BxN.shape[1]
    key_pos_BxN = key_pos_BxN.at[:, slot].set(pos)
    b = ids_B.shape[0]
    step = DecodeStep(key_pos_BxN=key_pos_BxN, slot=slot, q_pos_B=jnp.full((b,), pos, jnp.int32))
    h_Bx1xD, rings = apply_stack(model.layers, model.embed(ids_B)[:, None], cache=rings, step=step)
    logits_BxV = tied_logits(model.final_norm(h_Bx1xD[:, 0]), model.embed.table[...])
    return logits_BxV, rings, key_pos_BxN, pos + 1


def _decode_span(graphdef, params, state, ids_B, key, temperature, *, n, top_k, top_p):
    """Runs n decode steps with sampling in one call; ``state`` = (rings, key_pos_BxN, pos)."""

    def step(state, ids_B):
        logits_BxV, *state = _decode_step(graphdef, params, *state, ids_B)
        return logits_BxV, tuple(state)

    return sampled_steps(step, state, ids_B, key, temperature, n=n, top_k=top_k, top_p=top_p)


class SlidingWindowEngine:
    """Constant-memory prefill and decoding of a ``SlidingWindowLM``.

    Args:
      model: a sliding-window LM (``model.window`` >= 1).
      segment_chunks: segments of ``segment_chunks * 64`` tokens; must cover >= W tokens.
      offload: must be False (there is no chunk memory to keep on the host).

    Raises:
      MissingCapabilityError: the model has no segmented prefill.
      ValueError: segments shorter than W, or ``offload``.

    With full attention (``window`` -1) there is no bounded state: ``prefill`` is one forward
    over the whole input (``FullForwardScorer``) and decoding is refused.
    """

    def __init__(self, model: nnx.Module, *, segment_chunks: int = 256, offload: bool = False):
        cfg = model.cfg
        require(cfg, PREFILL)
        if offload:
            raise ValueError(
                "--offload: the sliding-window LM keeps only the last W positions' keys/values, "
                "so its memory is already constant; there is nothing to offload"
            )
        self.segment_len = segment_chunks * SEGMENT_UNIT
        # Full attention (window -1) has no bounded state: one forward over the whole input.
        self._full = FullForwardScorer(model) if cfg.window < 1 else None
        if segment_chunks < 1 or self.segment_len < cfg.window:
            raise ValueError(
                f"{segment_chunks=} must be >= 1 and segments of segment_chunks * {SEGMENT_UNIT} "
                f"= {self.segment_len} tokens must cover the window W={cfg.window}"
            )
        self.cfg = cfg
        self.graphdef, self.params = nnx.split(model)
        bind = functools.partial
        self._segment = jax.jit(
            bind(_segment_step, self.graphdef), static_argnames=("with_ce",), donate_argnums=(2,)
        )
        self._step = jax.jit(bind(_decode_step, self.graphdef), donate_argnums=(1, 2))
        self._span = jax.jit(
            bind(_decode_span, self.graphdef),
            static_argnames=("n", "top_k", "top_p"),
            donate_argnums=(1,),
        )

    def empty_caches(self, batch: int) -> WindowCache:
        """Window caches of every layer before any token, (layers, B, W, Hkv, d)."""
        cfg = self.cfg
        shape = (batch, cfg.window, cfg.num_kv_heads, cfg.head_dim)
        return WindowCache.empty(shape, to_dtype(cfg.dtype), layers=cfg.num_layers)

    def prefill(
        self,
        tokens_BxT,
        *,
        logits_at=None,
        with_ce: bool = False,
        progress: Callable[[int], None] | None = None,
        keep_state: bool = False,
        **unused,
    ) -> PrefillOutput:
        """Runs the LM over ``tokens_BxT`` segment by segment (see ``Engine.prefill``).

        Args:
          tokens_BxT: int token ids, T >= 1; negative ids are padding.
          logits_at: raw positions (Q,) or (B, Q) whose next-token logits to return.
          with_ce: also return the next-token CE sums over all positions.
          progress: called with the number of tokens after each segment.
          keep_state: return the window caches as ``carry`` (for decoding).

        Raises:
          ValueError: empty or non-2-D input, positions out of range, or an option only DRT's
            engine has (``record``, ``carry``, ``capacity``).
        """
        unsupported = sorted(k for k, v in unused.items() if v not in (None, False))
        if unsupported:
            raise ValueError(f"{unsupported}: the sliding-window LM's engine has no such option")
        if self._full is not None:
            if keep_state:
                raise ValueError(_NO_FULL_DECODE)
            return self._full.prefill(
                tokens_BxT, logits_at=logits_at, with_ce=with_ce, progress=progress
            )
        tokens = np.asarray(tokens_BxT)
        if tokens.ndim != 2 or tokens.shape[1] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty (B, T) int array, got {tokens.shape}")
        b, t = tokens.shape
        tokens = tokens.astype(np.int32)
        targets = np.concatenate([tokens[:, 1:], np.full((b, 1), IGNORE, np.int32)], axis=1)
        targets = np.where(targets < 0, IGNORE, targets).astype(np.int32)
        queries = None if logits_at is None else query_positions(logits_at, b, t)
        vocab = self.cfg.vocab_size
        logits = None if queries is None else np.zeros(queries.shape + (vocab,), np.float32)
        ce_sum, ce_count = np.zeros((b,)), np.zeros((b,), np.int64)
        cache = self.empty_caches(b)
        for start in range(0, t, self.segment_len):
            stop = min(start + self.segment_len, t)
            q = np.zeros((b, 0), np.int32) if queries is None else queries - start
            cache, totals, counts, seg_logits = self._segment(
                self.params,
                jnp.asarray(tokens[:, start:stop]),
                cache,
                jnp.asarray(targets[:, start:stop]),
                jnp.asarray(q),
                with_ce=with_ce,
            )
            cache = cache.with_history()
            if with_ce:
                ce_sum += np.asarray(totals, np.float64)
                ce_count += np.asarray(counts, np.int64)
            if queries is not None:
                in_seg = (queries >= start) & (queries < stop)
                if in_seg.any():
                    logits[in_seg] = np.asarray(seg_logits)[in_seg]
            if progress is not None:
                progress((stop - start) * b)
        return PrefillOutput(
            logits=logits,
            ce_sum=ce_sum if with_ce else None,
            ce_count=ce_count if with_ce else None,
            carry=(cache, t) if keep_state else None,
            retrievals=None,
            pad=0,
        )

    # -- generation (the engine protocol of gca_jax.inference.scoring) --------------------------

    prompt_multiple = 1  # prompts only need a common length

    def start_decoding(self, tokens_BxT, max_new_tokens: int):
        """Prefills the prompts and returns (logits_BxV at the last position, decoder)."""
        del max_new_tokens  # The state does not grow with the output.
        t = np.asarray(tokens_BxT).shape[1]
        out = self.prefill(tokens_BxT, logits_at=[t - 1], keep_state=True)
        cache, num_positions = out.carry
        return jnp.asarray(out.logits[:, 0]), SlidingWindowDecoder(self, cache, num_positions)


class SlidingWindowDecoder:
    """Feeds one token per step after a prefill; each step is one jitted call."""

    def __init__(self, engine: SlidingWindowEngine, cache: WindowCache, num_positions: int):
        w, p0 = engine.cfg.window, num_positions
        slot_pos_N = ring_slots(p0, w)
        b = cache.k_BxWxHkvxd.shape[1]
        self.engine = engine
        self.rings = RingCache(
            ring_from_window(cache.k_BxWxHkvxd, slot_pos_N, p0 - w),
            ring_from_window(cache.v_BxWxHkvxd, slot_pos_N, p0 - w),
        )
        self.key_pos_BxN = jnp.asarray(np.broadcast_to(slot_pos_N, (b, w + 1)), jnp.int32)
        self.pos = jnp.int32(p0)

    def feed(self, ids_B) -> jax.Array:
        """Feeds one token per batch element; returns (B, V) float32 next-token logits."""
        ids_B = jnp.asarray(ids_B, jnp.int32).reshape(-1)
        logits_BxV, self.rings, self.key_pos_BxN, self.pos = self.engine._step(
            self.engine.params, self.rings, self.key_pos_BxN, self.pos, ids_B
        )
        return logits_BxV

    # Fused spans of at most this many tokens: one compilation serves any generation length
    # (the last, shorter span compiles once more).
    max_span = 64

    def span(self, remaining: int) -> int:
        """Tokens ``feed_sampled`` takes in one call (no host step is ever needed here)."""
        return min(remaining, self.max_span)

    def feed_sampled(self, ids_B, key, n: int, *, top_k: int, temperature: float, top_p: float):
        """Feeds ``ids_B`` and n - 1 tokens sampled on the way; returns the n sampled, and the key.

        Equals n times ``feed`` then ``sample_next`` (one key split per token), in one jitted call.
        """
        if n < 1:
            raise ValueError(f"{n=} must be >= 1")
        ids_B = jnp.asarray(ids_B, jnp.int32).reshape(-1)
        state = (self.rings, self.key_pos_BxN, self.pos)
        ids_BxN, state, key = self.engine._span(
            self.engine.params, state, ids_B, key, temperature, n=n, top_k=top_k, top_p=top_p
        )
        self.rings, self.key_pos_BxN, self.pos = state
        return ids_BxN, key
