"""Transformer layers: lower decoder, chunk encoder and upper (GCA) decoder layers."""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax import sharding
from gca_jax.config import ModelConfig
from gca_jax.modeling.attention import ChunkSelfAttention, SlidingWindowSelfAttention
from gca_jax.modeling.layers import Dense, RMSNorm, SwiGLU, to_dtype
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval


def _norm(cfg: ModelConfig, eps: float) -> RMSNorm:
    return RMSNorm(
        cfg.hidden_size,
        eps=eps,
        param_dtype=to_dtype(cfg.param_dtype),
        out_dtype=to_dtype(cfg.dtype),
    )


def _mlp(cfg: ModelConfig, rngs: nnx.Rngs) -> SwiGLU:
    return SwiGLU(
        cfg.hidden_size,
        cfg.mlp_hidden,
        std=cfg.init_std,
        dtype=to_dtype(cfg.dtype),
        param_dtype=to_dtype(cfg.param_dtype),
        rngs=rngs,
    )


class DecoderLayer(nnx.Module):
    """Pre-norm layer: h += SWA(norm(h)); h += MLP(norm(h)) (spec §1.5)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg, cfg.rms_norm_eps)
        self.attn = SlidingWindowSelfAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, cfg.rms_norm_eps)
        self.mlp = _mlp(cfg, rngs)

    def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
        """(B, L, D) float32 residual stream in and out."""
        h_BxLxD = h_BxLxD + self.attn(self.input_norm(h_BxLxD)).astype(jnp.float32)
        return h_BxLxD + self.mlp(self.post_norm(h_BxLxD)).astype(jnp.float32)


class EncoderLayer(nnx.Module):
    """Bidirectional chunk-encoder layer with RoPE and eps 1e-6 norms (spec §1.6)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg, cfg.encoder_rms_norm_eps)
        self.attn = ChunkSelfAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, cfg.encoder_rms_norm_eps)
        self.mlp = _mlp(cfg, rngs)

    def __call__(self, h_NxPxD: jax.Array) -> jax.Array:
        """(N, P, D) float32 chunk states in and out."""
        h_NxPxD = h_NxPxD + self.attn(self.input_norm(h_NxPxD)).astype(jnp.float32)
        return h_NxPxD + self.mlp(self.post_norm(h_NxPxD)).astype(jnp.float32)


class GroupedCrossAttention(nnx.Module):
    """Per-layer GCA: pre-norm, q projection, kernel over retrieved chunks, o projection."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        kw = dict(
            std=cfg.init_std,
            dtype=to_dtype(cfg.dtype),
            param_dtype=to_dtype(cfg.param_dtype),
            rngs=rngs,
        )
        dim = cfg.hidden_size
        self.pre_norm = _norm(cfg, cfg.rms_norm_eps)
        self.q_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.o_proj = Dense(dim, dim, logical_axes=("heads", "embed"), **kw)
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.backend = cfg.kernel_backend

    def __call__(self, h_BxCxPxD: jax.Array, memory: ChunkMemory, ret: Retrieval) -> jax.Array:
        """(B, C, P, D) states -> (B, C, P, D) GCA output; zero where all weights are zero."""
        b, c, p, _ = h_BxCxPxD.shape
        q = self.q_proj(self.pre_norm(h_BxCxPxD)).reshape(b, c, p, self.num_heads, self.head_dim)
        o_BxCxPxHxd = sharding.gca_attention(  # shard_map'd kernel
            q,
            memory.keys.astype(q.dtype),
            memory.values.astype(q.dtype),
            ret.idx,
            ret.w,
            scale=1.0 / self.head_dim**0.5,
            backend=self.backend,
        )
        return self.o_proj(o_BxCxPxHxd.reshape(b, c, p, -1))


class UpperLayer(nnx.Module):
    """Upper decoder layer with the bypass residual (spec §1.10).

    h1 = h + SWA(norm(h)); out = h1 + MLP(norm(h1 + GCA(h1))): the GCA output reaches the
    residual stream only through the MLP input.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg, cfg.rms_norm_eps)
        self.attn = SlidingWindowSelfAttention(cfg, rngs=rngs)
        self.gca = GroupedCrossAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, cfg.rms_norm_eps)
        self.mlp = _mlp(cfg, rngs)

    def __call__(self, h_BxLxD: jax.Array, memory: ChunkMemory, ret: Retrieval) -> jax.Array:
        """(B, L, D) float32 residual stream in and out; ``ret`` is aligned to query chunks."""
        b, seq, dim = h_BxLxD.shape
        c = ret.idx.shape[1]
        h1_BxLxD = h_BxLxD + self.attn(self.input_norm(h_BxLxD)).astype(jnp.float32)
        a_BxCxPxD = self.gca(h1_BxLxD.reshape(b, c, seq // c, dim), memory, ret)
        mlp_in = self.post_norm(h1_BxLxD + a_BxCxPxD.reshape(b, seq, dim).astype(jnp.float32))
        return h1_BxLxD + self.mlp(mlp_in).astype(jnp.float32)
