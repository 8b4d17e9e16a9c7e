"""Self-attention blocks.

The decoder's sliding-window ALiBi attention and the encoder's bidirectional RoPE attention
within a chunk.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax import sharding
from gca_jax.config import ModelConfig
from gca_jax.modeling.layers import Dense, alibi_slopes, apply_rope, to_dtype


def _dense_kwargs(cfg: ModelConfig, rngs: nnx.Rngs) -> dict:
    return dict(
        std=cfg.init_std,
        dtype=to_dtype(cfg.dtype),
        param_dtype=to_dtype(cfg.param_dtype),
        rngs=rngs,
    )


class SlidingWindowSelfAttention(nnx.Module):
    """Causal attention over the last W + 1 positions with ALiBi and no RoPE (spec §1.5).

    Positions are those of the landmark-inserted sequence, so landmarks are ordinary keys.
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

    def project_qkv(self, x_BxLxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Splits x into per-head queries (B, L, H, d), keys and values (B, L, Hkv, d)."""
        b, seq, _ = x_BxLxD.shape
        q = self.q_proj(x_BxLxD).reshape(b, seq, self.num_heads, self.head_dim)
        k = self.k_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        return q, k, v

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        """(B, L, D) -> (B, L, D)."""
        q_BxLxHxd, k_BxLxHkvxd, v_BxLxHkvxd = self.project_qkv(x_BxLxD)
        o_BxLxHxd = sharding.sliding_window_attention(  # shard_map'd kernel
            q_BxLxHxd,
            k_BxLxHkvxd,
            v_BxLxHkvxd,
            window=self.window,
            alibi_slopes=alibi_slopes(self.num_heads),
            backend=self.backend,
        )
        b, seq = x_BxLxD.shape[:2]
        return self.o_proj(o_BxLxHxd.reshape(b, seq, -1))


class ChunkSelfAttention(nnx.Module):
    """Bidirectional attention inside each chunk, RoPE over slots 0..P-1 (spec §1.6)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        kw = _dense_kwargs(cfg, rngs)
        dim = cfg.hidden_size
        self.q_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.k_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.v_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.o_proj = Dense(dim, dim, logical_axes=("heads", "embed"), **kw)
        self.num_heads, self.head_dim, self.theta = cfg.num_heads, cfg.head_dim, cfg.rope_theta

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
