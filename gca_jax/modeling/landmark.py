"""Landmark Attention baseline: a LLaMA-style decoder with grouped-softmax attention over blocks.

Landmark Attention (Mohtashami & Jaggi, 2023) splits the sequence into blocks of P =
``landmark.block_len`` positions aligned to its start: P - 1 raw tokens, then a landmark token
(``model.landmark_id``). Every layer is pre-norm: h += Attn(RMSNorm(h)); h += SwiGLU(RMSNorm(h)),
with RoPE over the landmark-inserted positions and the grouped softmax of
``kernels.landmark.landmark_attention``: a query attends to its own block's earlier raw tokens
and, through one top-level softmax over past landmarks, to each past block's raw tokens. Hidden
states at landmark slots never reach the head, so the loss covers raw tokens only.

Worked layout, P = 4 (S = 3 raw tokens per block): raw [a b c d e] is padded to [a b c d e _],
inserted as [a b c L | d e _ L] (positions 0..7, RoPE angles by these positions); the states of
slots 3 and 7 and of the padded raw slot are dropped, so (B, 5, D) comes back.

Long-context inference (``gca_jax.inference.landmark_engine``) calls the same layers with a
``BlockMemory`` cache and a ``WindowStep``: windows of ``landmark.eval_window`` positions attend
to their own blocks and to the top-k retrieved memory blocks (``gca_jax.modeling.landmark_window``).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax import sharding
from gca_jax.config import ModelConfig
from gca_jax.modeling import flops
from gca_jax.modeling.chunking import insert_landmarks
from gca_jax.modeling.interface import (
    DECODE,
    PREFILL,
    SCORE,
    LanguageModel,
    final_norm,
    token_embedding,
)
from gca_jax.modeling.landmark_window import (
    BlockMemory,
    BlockSelection,
    WindowStep,
    select_in_blocks,
    windowed_attention,
)
from gca_jax.modeling.layers import Dense, RMSNorm, SwiGLU, apply_rope, to_dtype
from gca_jax.modeling.stack import apply_stack, make_stack


class LandmarkSelfAttention(nnx.Module):
    """Grouped-softmax self-attention with RoPE over blocks of P positions (landmark last)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, kv = cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        kw = dict(
            std=cfg.init_std,
            dtype=to_dtype(cfg.dtype),
            param_dtype=to_dtype(cfg.param_dtype),
            rngs=rngs,
        )
        self.q_proj = Dense(cfg.hidden_size, cfg.hidden_size, logical_axes=("embed", "heads"), **kw)
        self.k_proj = Dense(cfg.hidden_size, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.v_proj = Dense(cfg.hidden_size, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.o_proj = Dense(cfg.hidden_size, cfg.hidden_size, logical_axes=("heads", "embed"), **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.block_len = cfg.landmark.block_len
        self.theta = cfg.landmark.decoder_rope_theta
        self.top_k = cfg.landmark.eval_top_k
        self.backend = cfg.kernel_backend

    def _queries(self, x_BxLxD: jax.Array) -> jax.Array:
        b, seq, _ = x_BxLxD.shape
        return self.q_proj(x_BxLxD).reshape(b, seq, self.num_heads, self.head_dim)

    def select(self, x_BxQxD: jax.Array, landmarks_BxExHkvxd, step: WindowStep) -> BlockSelection:
        """The memory blocks the Q new positions attend to (``landmark_window.select_blocks``)."""
        return select_in_blocks(
            self._queries(x_BxQxD),
            landmarks_BxExHkvxd,
            step,
            top_k=self.top_k,
            block_len=self.block_len,
            theta=self.theta,
        )

    def __call__(
        self, x_BxLxD: jax.Array, cache: BlockMemory | None = None, step: WindowStep | None = None
    ):
        """(B, L, D) normed inputs on the inserted layout -> (B, L, D).

        Without ``cache``: the whole sequence (L = C * P) through the grouped-softmax kernel.
        With a ``BlockMemory`` and a ``WindowStep``: L new positions of the current window
        against it; returns (output, (window keys, window values)) with them written.
        """
        b, seq, _ = x_BxLxD.shape
        q = self._queries(x_BxLxD)
        k = self.k_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x_BxLxD).reshape(b, seq, self.num_kv_heads, self.head_dim)
        if cache is not None:
            o_BxLxHxd, window = windowed_attention(
                q, k, v, cache, step, top_k=self.top_k, block_len=self.block_len, theta=self.theta
            )
            return self.o_proj(o_BxLxHxd.astype(q.dtype).reshape(b, seq, -1)), window
        o_BxLxHxd = sharding.landmark_attention(  # shard_map'd kernel
            apply_rope(q, self.theta),
            apply_rope(k, self.theta),
            v,
            block_len=self.block_len,
            backend=self.backend,
        )
        return self.o_proj(o_BxLxHxd.reshape(b, seq, -1))


class LandmarkDecoderLayer(nnx.Module):
    """Pre-norm layer: h += LandmarkAttn(norm(h)); h += SwiGLU(norm(h))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pdt, cdt = to_dtype(cfg.param_dtype), to_dtype(cfg.dtype)
        dim = cfg.hidden_size
        self.input_norm = RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=cdt)
        self.attn = LandmarkSelfAttention(cfg, rngs=rngs)
        self.post_norm = RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=cdt)
        self.mlp = SwiGLU(
            dim, cfg.mlp_hidden, std=cfg.init_std, dtype=cdt, param_dtype=pdt, rngs=rngs
        )

    def __call__(
        self, h_BxLxD: jax.Array, cache: BlockMemory | None = None, step: WindowStep | None = None
    ):
        """(B, L, D) float32 residual stream in and out; with a cache, also the window K/V."""
        if cache is None:
            h_BxLxD = h_BxLxD + self.attn(self.input_norm(h_BxLxD)).astype(jnp.float32)
            return h_BxLxD + self.mlp(self.post_norm(h_BxLxD)).astype(jnp.float32)
        a_BxLxD, window = self.attn(self.input_norm(h_BxLxD), cache, step)
        h_BxLxD = h_BxLxD + a_BxLxD.astype(jnp.float32)
        return h_BxLxD + self.mlp(self.post_norm(h_BxLxD)).astype(jnp.float32), window

    def select(self, h_BxQxD: jax.Array, landmarks_BxExHkvxd, step: WindowStep) -> BlockSelection:
        """The memory blocks this layer's attention will read for the Q new positions."""
        return self.attn.select(self.input_norm(h_BxQxD), landmarks_BxExHkvxd, step)


class LandmarkLM(LanguageModel):
    """Decoder-only LM with Landmark Attention (``model.landmark``).

    Training and full-sequence scoring run the grouped softmax over the whole causal past;
    long-context prefill and decoding (windows plus top-k retrieved blocks) run in
    ``gca_jax.inference.landmark_engine`` on the same layers.
    """

    capabilities = frozenset({SCORE, PREFILL, DECODE})
    engine = "gca_jax.inference.landmark_engine:LandmarkEngine"

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.landmark is None:
            raise ValueError(
                f"LandmarkLM needs the model.landmark section (model_type={cfg.model_type!r})"
            )
        self.cfg = cfg
        self.embed = token_embedding(cfg, rngs=rngs)
        self.layers = make_stack(lambda r: LandmarkDecoderLayer(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = final_norm(cfg)

    def embed_blocks(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T) raw tokens -> (B, C * P, D) float32 embeddings with landmarks inserted.

        T is padded (with padding ids) to C * (P - 1), C = ceil(T / (P - 1)).
        """
        s = self.cfg.landmark.tokens_per_block
        t = tokens_BxT.shape[1]
        tokens_BxTp = jnp.pad(tokens_BxT, ((0, 0), (0, -t % s)), constant_values=-1)
        ids_BxCxP = insert_landmarks(tokens_BxTp, chunk_len=s, landmark_id=self.cfg.landmark_id)
        return self.embed(ids_BxCxP.reshape(ids_BxCxP.shape[0], -1))

    def hidden_from_embeddings(self, h_BxLxD: jax.Array, num_tokens: int) -> jax.Array:
        """Inserted-layout embeddings (B, C * P, D) -> final-normed states (B, T, D) at raw tokens.

        The landmark slots (and the padding of the last block) are dropped before the norm.
        """
        b, seq, dim = h_BxLxD.shape
        p = self.cfg.landmark.block_len
        h_BxLxD = apply_stack(self.layers, h_BxLxD, remat=self.cfg.remat)
        h_BxCxSxD = h_BxLxD.reshape(b, seq // p, p, dim)[:, :, : p - 1]
        return self.final_norm(h_BxCxSxD.reshape(b, -1, dim)[:, :num_tokens])

    def layer(self, index) -> LandmarkDecoderLayer:
        """Layer ``index`` (an int or a traced int32) of the stack, as a module."""
        graphdef, state = nnx.split(self.layers)
        return nnx.merge(
            graphdef,
            jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, index, 0, False), state),
        )

    def run_window(
        self, h_BxQxD: jax.Array, memory: BlockMemory, step: WindowStep
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Q new positions' embeddings through every layer against stacked per-layer memory.

        ``memory`` leaves carry a leading layer axis; returns the final-normed states (B, Q, D)
        and the updated window keys/values, each (layers, B, W, Hkv, d).
        """
        h_BxQxD, window = apply_stack(self.layers, h_BxQxD, cache=memory, step=step)
        return self.final_norm(h_BxQxD), window

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, T, D) at raw tokens; ``gumbel_key`` is unused."""
        del gumbel_key  # Training selects nothing at random.
        h_BxLxD = self.embed_blocks(tokens_BxT)
        return self.hidden_from_embeddings(h_BxLxD, tokens_BxT.shape[1]), {}

    @classmethod
    def flops_per_token(cls, cfg: ModelConfig, seq_len: int) -> float:
        """Training FLOPs per raw token at T = seq_len raw tokens (``gca_jax.modeling.flops``).

        Convention: the layers run over L = C * P inserted positions, C = ceil(T / (P - 1)), so
        each raw token pays P / (P - 1) positions of decoder layers (its own and its share of a
        landmark); each position's attention is full causal, (L + 1) / 2 keys on average
        (the grouped softmax scores every causal key, landmarks included). The tied head runs
        on raw tokens only. The landmark bookkeeping (in-block normalisers, top-level rescaling)
        is elementwise and, as softmax everywhere, not counted.
        """
        p = cfg.landmark.block_len
        positions = -(-seq_len // (p - 1)) * p
        layer_weights = cfg.num_layers * flops.decoder_layer_weights(cfg)
        context = cfg.num_layers * flops.window_context(-1, positions)
        per_position = flops.forward_flops(layer_weights, context, cfg.hidden_size)
        per_token = per_position * positions / seq_len + 2 * cfg.hidden_size * cfg.vocab_size
        return flops.TRAIN_FACTOR * per_token
