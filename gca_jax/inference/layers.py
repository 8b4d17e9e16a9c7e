"""Layer bodies with key/value caches: segmented prefill and one-position decode (spec §3.3-3.4).

These reuse the parameters and sub-modules of ``gca_jax.modeling`` layers and reproduce their
``__call__`` maths exactly, with two changes:

- prefill: the sliding-window attention of a segment also sees the previous W positions' keys
  and values (the carried cache), so a segmented forward equals the unsegmented one;
- decode: one position attends to a ring buffer of W + 1 slots; GCA reads the K chunks that the
  current retrieval already moved to the device.

Stacks are applied with ``lax.scan`` over the stacked layer parameters and the per-layer cache,
as ``gca_jax.modeling.stack.apply_stack`` does.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax.modeling.layers import alibi_slopes
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from kernels.gca import gca_decode
from kernels.swa import sliding_window_attention, sliding_window_decode


def scan_stack(stack: nnx.Module, layer_fn: Callable, h, cache, *args):
    """Runs ``h, cache_l = layer_fn(layer_l, h, cache_l, *args)`` over the stacked layers.

    Args:
      stack: a module built by ``make_stack`` (parameters with a leading layer axis).
      layer_fn: the per-layer body.
      h: the carried activations.
      cache: a pytree whose leaves have a leading layer axis.
      *args: extra arguments, the same for every layer.

    Returns:
      (h, new cache) with the cache stacked over layers again.
    """
    graphdef, state = nnx.split(stack)

    def body(carry, xs):
        layer_state, layer_cache = xs
        return layer_fn(nnx.merge(graphdef, layer_state), carry, layer_cache, *args)

    return jax.lax.scan(body, h, (state, cache))


# -- segmented prefill -------------------------------------------------------------------------


def _swa_segment(attn, x_BxLxD, cache, has_cache: bool):
    """SWA of a segment over [cached W positions + segment]; returns output and the new cache.

    The W cached keys precede the segment; their query rows are zero-filled and dropped, so only
    the segment's queries are kept. With ``has_cache`` False (first segment) nothing precedes.
    The new cache is the last W keys/values, left-padded with zeros when fewer exist (those
    slots are never attended: every later segment starts only after a first segment of >= W).
    """
    k_cache_BxWxHkvxd, v_cache_BxWxHkvxd = cache
    b, seg, _ = x_BxLxD.shape
    win = k_cache_BxWxHkvxd.shape[1]
    q, k, v = attn.project_qkv(x_BxLxD)
    if has_cache:
        q = jnp.concatenate([jnp.zeros((b, win) + q.shape[2:], q.dtype), q], axis=1)
        k = jnp.concatenate([k_cache_BxWxHkvxd.astype(k.dtype), k], axis=1)
        v = jnp.concatenate([v_cache_BxWxHkvxd.astype(v.dtype), v], axis=1)
    o_BxLxHxd = sliding_window_attention(
        q,
        k,
        v,
        window=attn.window,
        alibi_slopes=alibi_slopes(attn.num_heads),
        backend=attn.backend,
    )[:, -seg:]
    if k.shape[1] < win:
        pad = ((0, 0), (win - k.shape[1], 0), (0, 0), (0, 0))
        k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    new_cache = (
        k[:, -win:].astype(k_cache_BxWxHkvxd.dtype),
        v[:, -win:].astype(v_cache_BxWxHkvxd.dtype),
    )
    return attn.o_proj(o_BxLxHxd.reshape(b, seg, -1)), new_cache


def decoder_layer_segment(layer, h_BxLxD, cache, has_cache: bool):
    """``DecoderLayer.__call__`` over one segment with a carried SWA cache."""
    a, cache = _swa_segment(layer.attn, layer.input_norm(h_BxLxD), cache, has_cache)
    h_BxLxD = h_BxLxD + a.astype(jnp.float32)
    return h_BxLxD + layer.mlp(layer.post_norm(h_BxLxD)).astype(jnp.float32), cache


def upper_layer_segment(
    layer, h_BxLxD, cache, memory: ChunkMemory, ret: Retrieval, has_cache: bool
):
    """``UpperLayer.__call__`` (bypass residual, spec §1.10) over one segment with a SWA cache.

    ``memory`` may be the whole chunk memory or only the retrieved rows, with ``ret.idx``
    remapped into it (host offload): GCA reads only ``memory.keys[b, idx]``.
    """
    b, seg, dim = h_BxLxD.shape
    c = ret.idx.shape[1]
    a, cache = _swa_segment(layer.attn, layer.input_norm(h_BxLxD), cache, has_cache)
    h1_BxLxD = h_BxLxD + a.astype(jnp.float32)
    g_BxCxPxD = layer.gca(h1_BxLxD.reshape(b, c, seg // c, dim), memory, ret)
    mlp_in = layer.post_norm(h1_BxLxD + g_BxCxPxD.reshape(b, seg, dim).astype(jnp.float32))
    return h1_BxLxD + layer.mlp(mlp_in).astype(jnp.float32), cache


# -- one-position decode -----------------------------------------------------------------------


def _swa_decode(attn, x_BxD, ring, key_pos_BxN, slot, q_pos_B):
    """Writes this position's K/V into ring slot ``slot``, then attends over the ring."""
    ring_k_BxNxHkvxd, ring_v_BxNxHkvxd = ring
    b = x_BxD.shape[0]
    q, k, v = attn.project_qkv(x_BxD.reshape(b, 1, -1))
    ring_k_BxNxHkvxd = ring_k_BxNxHkvxd.at[:, slot].set(k[:, 0].astype(ring_k_BxNxHkvxd.dtype))
    ring_v_BxNxHkvxd = ring_v_BxNxHkvxd.at[:, slot].set(v[:, 0].astype(ring_v_BxNxHkvxd.dtype))
    o_BxHxd = sliding_window_decode(
        q[:, 0],
        ring_k_BxNxHkvxd.astype(q.dtype),
        ring_v_BxNxHkvxd.astype(q.dtype),
        key_pos_BxN,
        q_pos_B,
        window=attn.window,
        alibi_slopes=alibi_slopes(attn.num_heads),
    )
    return attn.o_proj(o_BxHxd.reshape(b, -1)), (ring_k_BxNxHkvxd, ring_v_BxNxHkvxd)


def decoder_layer_decode(layer, h_BxD, ring, key_pos_BxN, slot, q_pos_B):
    """``DecoderLayer.__call__`` for one position against the ring buffer."""
    a, ring = _swa_decode(layer.attn, layer.input_norm(h_BxD), ring, key_pos_BxN, slot, q_pos_B)
    h_BxD = h_BxD + a.astype(jnp.float32)
    return h_BxD + layer.mlp(layer.post_norm(h_BxD)).astype(jnp.float32), ring


def upper_layer_decode(layer, h_BxD, ring, key_pos_BxN, slot, q_pos_B, keys, values, w_BxK):
    """``UpperLayer.__call__`` for one position; GCA over the K retrieved chunks on device.

    Args:
      keys: (B, K, P', Hkv, d) keys of the chunks the current retrieval selected.
      values: (B, K, P', Hkv, d) their values.
      w_BxK: retrieval weights (0 for padding picks).
    """
    b = h_BxD.shape[0]
    a, ring = _swa_decode(layer.attn, layer.input_norm(h_BxD), ring, key_pos_BxN, slot, q_pos_B)
    h1_BxD = h_BxD + a.astype(jnp.float32)
    gca = layer.gca
    q = gca.q_proj(gca.pre_norm(h1_BxD)).reshape(b, 1, gca.num_heads, gca.head_dim)
    o_Bx1xHxd = gca_decode(
        q,
        keys.astype(q.dtype),
        values.astype(q.dtype),
        w_BxK,
        scale=1.0 / gca.head_dim**0.5,
        backend=gca.backend,
    )
    g_BxD = gca.o_proj(o_Bx1xHxd.reshape(b, -1))
    mlp_in = layer.post_norm(h1_BxD + g_BxD.astype(jnp.float32))
    return h1_BxD + layer.mlp(mlp_in).astype(jnp.float32), ring
