"""Self-attention blocks.

The decoder's sliding-window ALiBi attention (with an optional cache, see
``gca_jax.modeling.cache``) and the encoder's bidirectional RoPE attention within a chunk.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax import sharding
from gca_jax.config import ModelConfig
from gca_jax.modeling.cache import DecodeStep, RingCache, WindowCache
from gca_jax.modeling.layers import Dense, alibi_slopes, apply_rope, to_dtype


def _dense_kwargs(cfg: ModelConfig, rngs: nnx.Rngs) -> dict:
    return dict(
        std=cfg.init_std,
        dtype=to_dtype(cfg.dtype),
        param_dtype=to_dtype(cfg.param_dtype),
        rngs=rngs,
    )


class SlidingWindowSelfAttention(nnx.Module):
    """Causal attention over the last W + 1 positions with ALiBi and no RoPE (docs/spec.md §1.5).

    Positions are those of the input sequence (for DRT the landmark-inserted one, so landmarks
    are ordinary keys).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, kv = cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        kw = _dense_kwargs(cfg, rngs)
        self.q_proj = Dense(cfg.hidden_size, cfg.hidden_size, logical_axes=("embed", "heads"), **kw)
        self.k_proj = Dense(cfg.hidden_size, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.v_proj = Dense(cfg.hidden_size, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.o_proj = Dense(cfg.hidden_size, cfg.hidden_size, logical_axes=("heads", "embed"), **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.window = cfg.window
        self.backend = cfg.kernel_backend

    def __call__(
        self,
        x_BxLxD: jax.Array,
        cache: WindowCache | RingCache | None = None,
        step: DecodeStep | None = None,
    ):
        """(B, L, D) -> (B, L, D), and the updated cache when one is given.

        Args:
          x_BxLxD: normed inputs; L = 1 when decoding.
          cache: None (attend within x), a ``WindowCache`` (x is one segment of a longer
            sequence) or a ``RingCache`` (x is one position; needs ``step``).
          step: the decode position (with a ``RingCache`` only).
        """
        b, seq, _ = x_BxLxD.shape
        q, k, v = self._project_qkv(x_BxLxD)
        if cache is None:
            o_BxLxHxd = self._attend(q, k, v)
        elif isinstance(cache, WindowCache):
            o_BxLxHxd, cache = self._attend_segment(q, k, v, cache)
        else:
            o_BxLxHxd, cache = self._attend_ring(q, k, v, cache, step)
        out = self.o_proj(o_BxLxHxd.reshape(b, seq, -1))
        return out if cache is None else (out, cache)

    def _project_qkv(self, x_BxLxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per-head queries (B, L, H, d), keys and values (B, L, Hkv, d)."""
        b, seq, _ = x_BxLxD.shape
        q = self.q_proj(x_BxLxD).reshape(b, seq, self.num_heads, self.head_dim)
        k = self.k_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        return q, k, v

    def _attend(self, q_BxLxHxd, k_BxLxHkvxd, v_BxLxHkvxd) -> jax.Array:
        return sharding.sliding_window_attention(  # shard_map'd kernel
            q_BxLxHxd,
            k_BxLxHkvxd,
            v_BxLxHkvxd,
            window=self.window,
            alibi_slopes=alibi_slopes(self.num_heads),
            backend=self.backend,
        )

    def _attend_segment(self, q, k, v, cache: WindowCache):
        """Attention over [cached W positions + segment]; the new cache is the last W K/V.

        The cached keys get zero queries whose outputs are dropped, so only the segment's
        queries are kept. A cache without history (first segment) adds nothing. When fewer than
        W positions exist, the new cache is left-padded with zeros; those slots are never
        attended, since every later segment follows a first segment of >= W positions.
        """
        b, seg = q.shape[:2]
        win = cache.k_BxWxHkvxd.shape[1]
        if cache.has_history:
            q = jnp.concatenate([jnp.zeros((b, win) + q.shape[2:], q.dtype), q], axis=1)
            k = jnp.concatenate([cache.k_BxWxHkvxd.astype(k.dtype), k], axis=1)
            v = jnp.concatenate([cache.v_BxWxHkvxd.astype(v.dtype), v], axis=1)
        o_BxLxHxd = self._attend(q, k, v)[:, -seg:]
        if k.shape[1] < win:
            pad = ((0, 0), (win - k.shape[1], 0), (0, 0), (0, 0))
            k, v = jnp.pad(k, pad), jnp.pad(v, pad)
        new_cache = WindowCache(
            k[:, -win:].astype(cache.k_BxWxHkvxd.dtype),
            v[:, -win:].astype(cache.v_BxWxHkvxd.dtype),
            has_history=True,
        )
        return o_BxLxHxd, new_cache

    def _attend_ring(self, q, k, v, cache: RingCache, step: DecodeStep):
        """Writes this position's K/V into ring slot ``step.slot``, then attends over the ring."""
        ring_k = cache.k_BxNxHkvxd.at[:, step.slot].set(k[:, 0].astype(cache.k_BxNxHkvxd.dtype))
        ring_v = cache.v_BxNxHkvxd.at[:, step.slot].set(v[:, 0].astype(cache.v_BxNxHkvxd.dtype))
        o_BxHxd = sharding.sliding_window_decode(
            q[:, 0],
            ring_k.astype(q.dtype),
            ring_v.astype(q.dtype),
            step.key_pos_BxN,
            step.q_pos_B,
            window=self.window,
            alibi_slopes=alibi_slopes(self.num_heads),
        )
        return o_BxHxd[:, None], RingCache(ring_k, ring_v)


class ChunkSelfAttention(nnx.Module):
    """Bidirectional attention inside each chunk, RoPE over slots 0..P-1 (docs/spec.md §1.6)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        kw = _dense_kwargs(cfg, rngs)
        dim = cfg.hidden_size
        self.q_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.k_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.v_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.o_proj = Dense(dim, dim, logical_axes=("heads", "embed"), **kw)
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.theta = cfg.retrieval.rope_theta

    def __call__(self, x_NxPxD: jax.Array) -> jax.Array:
        """(N, P, D) chunks -> (N, P, D), every slot attending to every slot of its chunk."""
        n, p, _ = x_NxPxD.shape
        shape = (n, p, self.num_heads, self.head_dim)
        q_NxPxHxd = apply_rope(self.q_proj(x_NxPxD).reshape(shape), self.theta)
        k_NxPxHxd = apply_rope(self.k_proj(x_NxPxD).reshape(shape), self.theta)
        v_NxPxHxd = self.v_proj(x_NxPxD).reshape(shape)
        logits_NxHxPxP = jnp.einsum(
            "NPHd,NQHd->NHPQ", q_NxPxHxd, k_NxPxHxd, preferred_element_type=jnp.float32
        )
        probs_NxHxPxP = jax.nn.softmax(logits_NxHxPxP / jnp.sqrt(self.head_dim), axis=-1)
        o_NxPxHxd = jnp.einsum(
            "NHPQ,NQHd->NPHd",
            probs_NxHxPxP.astype(v_NxPxHxd.dtype),
            v_NxPxHxd,
            preferred_element_type=jnp.float32,
        )
        return self.o_proj(o_NxPxHxd.reshape(n, p, -1).astype(v_NxPxHxd.dtype))
