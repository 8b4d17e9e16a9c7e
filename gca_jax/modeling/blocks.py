"""Transformer layers: lower decoder, chunk encoder and upper (GCA) decoder layers.

Each decoder layer's ``__call__`` serves training, segmented prefill and decode: the optional
``cache`` (and, when decoding, ``step``) of ``gca_jax.modeling.cache`` goes to its sliding-window
attention, and the layer then returns ``(h, cache)`` instead of ``h``.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax import sharding
from gca_jax.config import ModelConfig
from gca_jax.modeling.attention import ChunkSelfAttention, SlidingWindowSelfAttention
from gca_jax.modeling.cache import DecodeStep
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
    """Pre-norm layer: h += SWA(norm(h)); h += MLP(norm(h)) (docs/spec.md §1.5)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg, cfg.rms_norm_eps)
        self.attn = SlidingWindowSelfAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, cfg.rms_norm_eps)
        self.mlp = _mlp(cfg, rngs)

    def __call__(self, h_BxLxD: jax.Array, cache=None, step: DecodeStep | None = None):
        """(B, L, D) float32 residual stream in and out (and the cache, when one is given)."""
        a = self.attn(self.input_norm(h_BxLxD), cache, step)
        a, cache = a if cache is not None else (a, None)
        h_BxLxD = h_BxLxD + a.astype(jnp.float32)
        h_BxLxD = h_BxLxD + self.mlp(self.post_norm(h_BxLxD)).astype(jnp.float32)
        return h_BxLxD if cache is None else (h_BxLxD, cache)


class EncoderLayer(nnx.Module):
    """Bidirectional chunk-encoder layer with RoPE and eps 1e-6 norms (docs/spec.md §1.6)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        eps = cfg.retrieval.encoder_rms_norm_eps
        self.input_norm = _norm(cfg, eps)
        self.attn = ChunkSelfAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, eps)
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

    def __call__(
        self, h_BxCxPxD: jax.Array, memory: ChunkMemory, ret: Retrieval, *, decode: bool = False
    ) -> jax.Array:
        """(B, C, P, D) states -> (B, C, P, D) GCA output; zero where all weights are zero.

        With ``decode``, C = P = 1 (one position) and ``memory`` holds exactly the K chunks the
        current retrieval selected (B, K, P', Hkv, d), with weights ``ret.w`` (B, K); ``ret.idx``
        is not read.
        """
        b, c, p, _ = h_BxCxPxD.shape
        q = self.q_proj(self.pre_norm(h_BxCxPxD)).reshape(b, c, p, self.num_heads, self.head_dim)
        keys, values = memory.keys.astype(q.dtype), memory.values.astype(q.dtype)
        scale = 1.0 / self.head_dim**0.5
        if decode:
            o = sharding.gca_decode(q[:, 0], keys, values, ret.w, scale=scale, backend=self.backend)
            return self.o_proj(o.reshape(b, 1, 1, -1))
        o_BxCxPxHxd = sharding.gca_attention(  # shard_map'd kernel
            q, keys, values, ret.idx, ret.w, scale=scale, backend=self.backend
        )
        return self.o_proj(o_BxCxPxHxd.reshape(b, c, p, -1))


class UpperLayer(nnx.Module):
    """Upper decoder layer with the bypass residual (docs/spec.md §1.10).

    h1 = h + SWA(norm(h)); out = h1 + MLP(norm(h1 + GCA(h1))): the GCA output reaches the
    residual stream only through the MLP input.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = _norm(cfg, cfg.rms_norm_eps)
        self.attn = SlidingWindowSelfAttention(cfg, rngs=rngs)
        self.gca = GroupedCrossAttention(cfg, rngs=rngs)
        self.post_norm = _norm(cfg, cfg.rms_norm_eps)
        self.mlp = _mlp(cfg, rngs)

    def __call__(
        self,
        h_BxLxD: jax.Array,
        memory: ChunkMemory,
        ret: Retrieval,
        cache=None,
        step: DecodeStep | None = None,
    ):
        """(B, L, D) float32 residual stream in and out (and the cache, when one is given).

        ``ret`` is aligned to query chunks: (B, C, K) with L = C * P. ``memory`` may be the
        whole chunk memory or only the retrieved rows with ``ret.idx`` remapped into it (GCA
        reads only ``memory.keys[b, idx]``). When decoding (``step`` given), L = 1 and
        ``memory``/``ret`` are as ``GroupedCrossAttention`` with ``decode``.
        """
        b, seq, dim = h_BxLxD.shape
        decode = step is not None
        c = 1 if decode else ret.idx.shape[1]
        a = self.attn(self.input_norm(h_BxLxD), cache, step)
        a, cache = a if cache is not None else (a, None)
        h1_BxLxD = h_BxLxD + a.astype(jnp.float32)
        g_BxCxPxD = self.gca(h1_BxLxD.reshape(b, c, seq // c, dim), memory, ret, decode=decode)
        mlp_in = self.post_norm(h1_BxLxD + g_BxCxPxD.reshape(b, seq, dim).astype(jnp.float32))
        h_BxLxD = h1_BxLxD + self.mlp(mlp_in).astype(jnp.float32)
        return h_BxLxD if cache is None else (h_BxLxD, cache)
