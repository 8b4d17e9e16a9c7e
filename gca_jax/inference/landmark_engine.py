"""Long-context inference of Landmark Attention: windowed prefill, block memory, decoding.

The sequence (landmarks inserted: blocks of P = ``landmark.block_len`` positions, the last one
the landmark) runs in windows of W = ``landmark.eval_window`` positions, aligned to its start
(docs/inference.md, "Landmark Attention"). Per window, every layer of ``LandmarkLM`` attends
with the grouped softmax to the window's own blocks and to the K = ``eval_top_k`` memory blocks
each query and head selects (``gca_jax.modeling.landmark_window``). After a window, its W / P
blocks become memory: landmark keys (slot P - 1 of each block, without RoPE) on the device, block
keys (without RoPE) and values on the device or, with ``offload``, in host memory.

Per window, on the device, one jitted step runs all layers (a scan over the stacked per-layer
memory). With offload, each layer runs in two jitted steps: ``select`` (the layer's queries
against the landmark keys on the device), then, after the rows those selections use are copied
from host memory (``BlockStore.gather``), the layer itself reading only them. Both paths give the
same numbers. Decoding continues the window loop one position at a time: a decoded position is
exactly the prefill of that position.
"""

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.inference.engine import PrefillOutput, query_positions
from gca_jax.modeling import PREFILL, require
from gca_jax.modeling.chunking import IGNORE
from gca_jax.modeling.landmark_window import BlockMemory, BlockSelection, WindowStep
from gca_jax.modeling.layers import to_dtype
from gca_jax.modeling.loss import blocked_cross_entropy, tied_logits

_log = logging.getLogger(__name__)


def inserted_ids(tokens_BxT: np.ndarray, block_len: int, landmark_id: int, length: int):
    """(B, T) raw ids -> (B, length) ids with a landmark after every P - 1; -1 pads the rest.

    Example, P = 4: [a b c d e] -> [a b c L d e -1 L -1 ...]. Raw token n sits at position
    (n // (P - 1)) * P + n % (P - 1).
    """
    b, t = tokens_BxT.shape
    s = block_len - 1
    c = -(-t // s)
    raw = np.pad(tokens_BxT, ((0, 0), (0, c * s - t)), constant_values=-1).reshape(b, c, s)
    ids = np.concatenate([raw, np.full((b, c, 1), landmark_id, raw.dtype)], axis=2)
    return np.pad(ids.reshape(b, c * block_len), ((0, 0), (0, length - c * block_len)),
                  constant_values=-1)  # fmt: skip


def raw_position(n, block_len: int):
    """Inserted position of raw token n."""
    return (n // (block_len - 1)) * block_len + n % (block_len - 1)


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_blocks(buf_LxBxEx, blocks_LxBxNx, start):
    """buf[:, :, start:start + N] = blocks, in place."""
    index = (0, 0, start) + (0,) * (buf_LxBxEx.ndim - 3)
    return jax.lax.dynamic_update_slice(buf_LxBxEx, blocks_LxBxNx.astype(buf_LxBxEx.dtype), index)


@dataclasses.dataclass
class BlockStore:
    """The memory blocks of every layer of a batch of sequences.

    Attributes:
      landmarks: (layers, B, E, Hkv, d) landmark keys without RoPE, on the device.
      keys: (layers, B, E, P, Hkv, d) block keys without RoPE, device array or host numpy.
      values: like ``keys``.
      num_blocks: rows written so far.
      offload: whether keys and values live in host memory.
    """

    landmarks: jax.Array
    keys: jax.Array | np.ndarray
    values: jax.Array | np.ndarray
    num_blocks: int
    offload: bool

    @classmethod
    def allocate(cls, *, layers, batch, capacity, block_len, kv_heads, head_dim, dtype, offload):
        """Zero-filled memory of ``capacity`` blocks."""
        shape = (layers, batch, capacity, block_len, kv_heads, head_dim)
        landmarks = jnp.zeros((layers, batch, capacity, kv_heads, head_dim), dtype)
        # np.zeros is lazily paged: host memory grows only as blocks are written.
        zeros = np.zeros if offload else jnp.zeros
        keys, values = zeros(shape, dtype), zeros(shape, dtype)
        _log.info("block store: %d blocks, K/V %.2f GB on %s", capacity, 2 * keys.nbytes / 1e9,
                  "host" if offload else "device")  # fmt: skip
        return cls(landmarks, keys, values, 0, offload)

    @property
    def capacity(self) -> int:
        """E."""
        return self.landmarks.shape[2]

    def append(self, window_k, window_v) -> None:
        """Appends the W / P complete blocks of a full window (layers, B, W, Hkv, d)."""
        layers, b, w, hkv, d = window_k.shape
        p = self.keys.shape[3]
        n, start = w // p, self.num_blocks
        if start + n > self.capacity:
            raise ValueError(f"block store full: {start} + {n} blocks > capacity {self.capacity}")
        k_blocks = window_k.reshape(layers, b, n, p, hkv, d)
        self.landmarks = _write_blocks(self.landmarks, k_blocks[:, :, :, p - 1], start)
        if self.offload:
            self.keys[:, :, start : start + n] = np.asarray(k_blocks)
            self.values[:, :, start : start + n] = np.asarray(window_v).reshape(k_blocks.shape)
        else:
            self.keys = _write_blocks(self.keys, k_blocks, start)
            self.values = _write_blocks(self.values, window_v.reshape(k_blocks.shape), start)
        self.num_blocks = start + n

    def gather(self, layer: int, sel: BlockSelection):
        """Host offload: the rows ``sel`` of layer ``layer`` uses, on the device; remapped ``sel``.

        Per batch element, the union of the valid selected rows (at least one row), padded
        with its first row to a power of two (>= 16, <= E): few distinct shapes.
        """
        idx, valid = np.asarray(sel.idx_BxQxHxK), np.asarray(sel.valid_BxQxHxK)
        uniq = [np.unique(i[v]) if v.any() else np.zeros(1, i.dtype) for i, v in zip(idx, valid)]
        largest = max(u.size for u in uniq)
        size = min(max(16, 1 << (largest - 1).bit_length()), self.capacity)
        rows_BxU = np.stack([np.pad(u, (0, size - u.size), mode="edge") for u in uniq])
        remapped = np.stack(
            [
                np.where(v, np.searchsorted(u, np.minimum(i, u[-1])), 0)
                for u, i, v in zip(uniq, idx, valid)
            ]  # fmt: skip
        ).astype(np.int32)
        sel_Bx1 = np.arange(idx.shape[0]).reshape(-1, 1)
        keys = jax.device_put(self.keys[layer, sel_Bx1, rows_BxU])
        values = jax.device_put(self.values[layer, sel_Bx1, rows_BxU])
        return keys, values, sel.replace(idx_BxQxHxK=jnp.asarray(remapped))


@dataclasses.dataclass
class LandmarkState:
    """What a prefill leaves for decoding.

    Attributes:
      store: the memory blocks.
      window_k: (layers, B, W, Hkv, d) keys without RoPE of the current window, device.
      window_v: its values.
      offset: positions of the current window written so far (W = full: flushed before more).
      raw_tokens: raw tokens processed so far.
    """

    store: BlockStore
    window_k: jax.Array
    window_v: jax.Array
    offset: int
    raw_tokens: int


# -- jitted step bodies (graphdef bound with functools.partial) --------------------------------


def _window_step(graphdef, params, ids_BxQ, win_k, win_v, store_arrays, offset, num_blocks):
    """All layers on the device for Q new positions; returns final-normed h and the window."""
    model = nnx.merge(graphdef, params)
    landmarks, keys, values = store_arrays
    memory = BlockMemory(win_k, win_v, keys, values, landmarks_BxExHkvxd=landmarks)
    return model.run_window(model.embed(ids_BxQ), memory, WindowStep(offset, num_blocks))


def _embed_step(graphdef, params, ids_BxQ):
    return nnx.merge(graphdef, params).embed(ids_BxQ)


def _select_step(graphdef, params, layer, h_BxQxD, landmarks_LxBxExHkvxd, offset, num_blocks):
    model = nnx.merge(graphdef, params)
    lmk = jax.lax.dynamic_index_in_dim(landmarks_LxBxExHkvxd, layer, 0, False)
    return model.layer(layer).select(h_BxQxD, lmk, WindowStep(offset, num_blocks))


def _layer_step(graphdef, params, layer, h_BxQxD, win_k, win_v, keys, values, sel, offset):
    """One layer reading the gathered rows ``keys``/``values``; updates window ``layer``."""
    model = nnx.merge(graphdef, params)
    pick = functools.partial(jax.lax.dynamic_index_in_dim, index=layer, axis=0, keepdims=False)
    memory = BlockMemory(pick(win_k), pick(win_v), keys, values, selection=sel)
    step = WindowStep(offset, jnp.int32(0))  # num_blocks is only read by selection
    h_BxQxD, (k_l, v_l) = model.layer(layer)(h_BxQxD, memory, step)
    put = functools.partial(jax.lax.dynamic_update_index_in_dim, index=layer, axis=0)
    return h_BxQxD, put(win_k, k_l), put(win_v, v_l)


def _norm_step(graphdef, params, h_BxQxD):
    return nnx.merge(graphdef, params).final_norm(h_BxQxD)


def _head_step(graphdef, params, h_BxWxD, targets_BxN, query_BxQ, *, with_ce):
    """CE sums over the window's raw tokens and logits at raw in-window indices."""
    model = nnx.merge(graphdef, params)
    b, w, dim = h_BxWxD.shape
    p = model.cfg.landmark.block_len
    h_BxNxD = h_BxWxD.reshape(b, w // p, p, dim)[:, :, : p - 1].reshape(b, -1, dim)
    table_VxD = model.embed.table[...]
    sums = counts = None
    if with_ce:
        ce = functools.partial(
            blocked_cross_entropy, table_VxD=table_VxD, block=model.cfg.loss_block
        )
        sums, counts = jax.vmap(lambda h, t: ce(h, targets_N=t))(h_BxNxD, targets_BxN)
    q_BxQ = jnp.clip(query_BxQ, 0, h_BxNxD.shape[1] - 1)
    h_BxQxD = jnp.take_along_axis(h_BxNxD, q_BxQ.reshape(b, -1, 1), axis=1)
    return sums, counts, tied_logits(h_BxQxD, table_VxD)


class LandmarkEngine:
    """Windowed long-context inference of a ``LandmarkLM`` (module docstring).

    Args:
      model: a ``LandmarkLM``.
      segment_chunks: unused (the engine protocol passes it); windows are
        ``model.landmark.eval_window`` positions.
      offload: keep block keys and values in host memory (landmark keys stay on the device).

    Raises:
      MissingCapabilityError: the model has no windowed prefill.
    """

    def __init__(self, model: nnx.Module, *, segment_chunks: int | None = None, offload=False):
        del segment_chunks  # Windows come from model.landmark.eval_window.
        cfg = model.cfg
        require(cfg, PREFILL)
        self.cfg, self.lcfg = cfg, cfg.landmark
        self.offload = offload
        self.window = cfg.landmark.eval_window
        self.graphdef, self.params = nnx.split(model)
        self.dtype = to_dtype(cfg.dtype)
        bind = functools.partial
        self._window_step = jax.jit(bind(_window_step, self.graphdef), donate_argnums=(2, 3))
        self._embed = jax.jit(bind(_embed_step, self.graphdef))
        self._select = jax.jit(bind(_select_step, self.graphdef))
        self._layer = jax.jit(bind(_layer_step, self.graphdef), donate_argnums=(3, 4))
        self._norm = jax.jit(bind(_norm_step, self.graphdef))
        self._head = jax.jit(bind(_head_step, self.graphdef), static_argnames=("with_ce",))

    prompt_multiple = 1  # any prompt length: a partial last block is continued by decoding

    # -- state ---------------------------------------------------------------------------------

    def empty_state(self, batch: int, capacity: int) -> LandmarkState:
        """The state before any token: an empty window and ``capacity`` memory blocks."""
        cfg = self.cfg
        store = BlockStore.allocate(
            layers=cfg.num_layers,
            batch=batch,
            capacity=max(capacity, self.lcfg.eval_top_k),  # selection reads K rows
            block_len=self.lcfg.block_len,
            kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            dtype=self.dtype,
            offload=self.offload,
        )
        shape = (cfg.num_layers, batch, self.window, cfg.num_kv_heads, cfg.head_dim)
        return LandmarkState(store, jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype),
                             0, 0)  # fmt: skip

    def capacity_for(self, positions: int) -> int:
        """Memory blocks for ``positions`` inserted positions (all windows but the last)."""
        windows = -(-positions // self.window)
        return max(windows - 1, 0) * (self.window // self.lcfg.block_len)

    def run(self, state: LandmarkState, ids_BxQ) -> jax.Array:
        """Q new positions (inserted ids) of the current window; returns final-normed (B, Q, D).

        A full window is first flushed into memory; the Q positions must fit in the window.
        """
        if state.offset == self.window:
            state.store.append(state.window_k, state.window_v)
            state.offset = 0
        q = ids_BxQ.shape[1]
        assert state.offset + q <= self.window, (state.offset, q)
        ids = jnp.asarray(ids_BxQ, jnp.int32)
        offset, n = jnp.int32(state.offset), jnp.int32(state.store.num_blocks)
        store = state.store
        if not self.offload:
            h, (state.window_k, state.window_v) = self._window_step(
                self.params, ids, state.window_k, state.window_v,
                (store.landmarks, store.keys, store.values), offset, n,
            )  # fmt: skip
        else:
            h = self._embed(self.params, ids)
            for layer in range(self.cfg.num_layers):
                sel = self._select(self.params, layer, h, store.landmarks, offset, n)
                keys, values, sel = store.gather(layer, sel)
                h, state.window_k, state.window_v = self._layer(
                    self.params, layer, h, state.window_k, state.window_v, keys, values, sel,
                    offset,
                )  # fmt: skip
            h = self._norm(self.params, h)
        state.offset += q
        return h

    # -- prefill -------------------------------------------------------------------------------

    def prefill(
        self,
        tokens_BxT,
        *,
        logits_at=None,
        with_ce: bool = False,
        capacity: int | None = None,
        keep_state: bool = False,
        progress: Callable[[int], None] | None = None,
        **unused,
    ) -> PrefillOutput:
        """Runs the model over ``tokens_BxT`` window by window (``Engine.prefill``'s interface).

        Args:
          tokens_BxT: int token ids, T >= 1 (negative ids are padding: embedded as pad_id, never
            scored).
          logits_at: raw positions (Q,) or (B, Q) whose next-token logits to return.
          with_ce: also return the next-token CE sums over all positions.
          capacity: memory blocks to allocate (default: what the input needs).
          keep_state: return the ``LandmarkState`` as ``carry``, for decoding.
          progress: called with the number of raw tokens after each window.

        Raises:
          ValueError: empty or non-2-D input, positions out of range, too small a capacity, or
            an option only DRT's engine has (``carry``, ``record``).
        """
        refused = sorted(k for k, v in unused.items() if v not in (None, False))
        if refused:
            raise ValueError(f"{refused}: not supported by the Landmark Attention engine")
        tokens = np.asarray(tokens_BxT)
        if tokens.ndim != 2 or tokens.shape[1] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty (B, T) int array, got {tokens.shape}")
        b, t = tokens.shape
        p, w = self.lcfg.block_len, self.window
        s, blocks_per_window = p - 1, w // p
        num_windows = -(-(-(-t // s) * p) // w)  # ceil(C * P / W), C = ceil(T / S) blocks
        needed = self.capacity_for(num_windows * w)
        if capacity is not None and capacity < needed:
            raise ValueError(f"{capacity=} < the {needed} memory blocks this input needs")
        ids = inserted_ids(tokens.astype(np.int32), p, self.cfg.landmark_id, num_windows * w)
        targets = np.concatenate([tokens[:, 1:], np.full((b, 1), IGNORE)], axis=1)
        targets = np.where(targets < 0, IGNORE, targets).astype(np.int32)
        raw_per_window = blocks_per_window * s
        targets = np.pad(targets, ((0, 0), (0, num_windows * raw_per_window - t)),
                         constant_values=IGNORE)  # fmt: skip
        queries = None if logits_at is None else query_positions(logits_at, b, t)
        logits = None if queries is None else np.zeros(queries.shape + (self.cfg.vocab_size,),
                                                       np.float32)  # fmt: skip
        ce_sum, ce_count = np.zeros((b,)), np.zeros((b,), np.int64)
        state = self.empty_state(b, capacity or needed)
        for win in range(num_windows):
            h = self.run(state, ids[:, win * w : (win + 1) * w])
            r0 = win * raw_per_window
            self._score(h, targets[:, r0 : r0 + raw_per_window], queries, r0, with_ce, logits,
                        ce_sum, ce_count)  # fmt: skip
            if progress is not None:
                progress(b * (min(t, r0 + raw_per_window) - r0))
        # The state continues after the last raw token (a partial block is continued).
        state.offset = raw_position(t, p) - (num_windows - 1) * w
        state.raw_tokens = t
        return PrefillOutput(
            logits=logits,
            ce_sum=ce_sum if with_ce else None,
            ce_count=ce_count if with_ce else None,
            carry=state if keep_state else None,
            retrievals=None,
            pad=0,
        )

    def _score(self, h, targets, queries, r0, with_ce, logits, ce_sum, ce_count):
        """Head over one window: CE sums and the logits of the queries inside it."""
        n = targets.shape[1]
        in_win = None if queries is None else (queries >= r0) & (queries < r0 + n)
        if not with_ce and (in_win is None or not in_win.any()):
            return
        q = np.zeros((targets.shape[0], 0), np.int32) if in_win is None else queries - r0
        sums, counts, win_logits = self._head(
            self.params, h, jnp.asarray(targets), jnp.asarray(q), with_ce=with_ce
        )
        if with_ce:
            ce_sum += np.asarray(sums, np.float64)
            ce_count += np.asarray(counts, np.int64)
        if in_win is not None and in_win.any():
            logits[in_win] = np.asarray(win_logits)[in_win]

    # -- decoding ------------------------------------------------------------------------------

    def start_decoding(self, tokens_BxT, max_new_tokens: int):
        """Prefills the prompts and returns (logits_BxV at the last prompt token, decoder)."""
        t = np.asarray(tokens_BxT).shape[1]
        total = raw_position(t + max_new_tokens, self.lcfg.block_len) + 1
        out = self.prefill(
            tokens_BxT, logits_at=[t - 1], keep_state=True, capacity=self.capacity_for(total)
        )
        return jnp.asarray(out.logits[:, 0]), LandmarkDecoder(self, out.carry)


class LandmarkDecoder:
    """Feeds one raw token per batch element; the landmark follows every P - 1 of them."""

    def __init__(self, engine: LandmarkEngine, state: LandmarkState):
        self.engine, self.state = engine, state
        self._head = jax.jit(
            lambda params, h: tied_logits(h, nnx.merge(engine.graphdef, params).embed.table[...])
        )

    def feed(self, ids_B) -> jax.Array:
        """One token per batch element -> (B, V) float32 next-token logits."""
        eng, state = self.engine, self.state
        ids_Bx1 = np.asarray(ids_B, np.int32).reshape(-1, 1)
        h_Bx1xD = eng.run(state, ids_Bx1)
        state.raw_tokens += 1
        if state.raw_tokens % (eng.lcfg.block_len - 1) == 0:
            eng.run(state, np.full_like(ids_Bx1, eng.cfg.landmark_id))
        return self._head(eng.params, h_Bx1xD[:, 0])
