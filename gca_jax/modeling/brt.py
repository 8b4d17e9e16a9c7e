"""Block-Recurrent Transformer baseline (docs/architecture.md, "Model types").

The sequence runs in blocks of L = ``brt.block_len`` tokens. Every layer is pre-norm (RMSNorm,
SwiGLU, no biases) and its self-attention sees its own block causally plus the previous block's
keys/values, so the receptive field is 2L. One layer (``brt.recurrent_layer``, counting from 1)
also holds a recurrent state of ``brt.state_len`` vectors of width D, with a learned initial state
and learned state position embeddings:

- read: the block's tokens cross-attend to the state (all state vectors, no mask); the result is
  concatenated with the self-attention output and projected back to D;
- write: the state vectors attend to themselves and, separately, to the block's own keys/values;
  the two results are concatenated and projected to a candidate z; with the ``fixed`` gate the
  new state is sigmoid(beta) * z + (1 - sigmoid(beta)) * state (beta learned per dimension),
  with the ``lstm`` gate state * f + z * i with f = sigmoid(W_f z + b_f + 1) and
  i = sigmoid(W_i z + b_i - 1).

Positions: self-attention uses rotary embeddings with xPos scaling over the two-block window
(previous block at positions 0..L-1, the current block at L..2L-1), the scheme of the baseline
implementation the paper trained (docs/architecture.md); attention to and from the state carries
no positions beyond the learned state position embeddings.

Training is one ``lax.scan`` over blocks whose carry is the state and every layer's previous-block
K/V, rematerialised per block (``model.remat``). Gradients flow within a segment of
``brt.segment_blocks`` blocks; the carry passes through ``stop_gradient`` at each segment start.
With ``state_dropout``/``memory_dropout`` > 0 and a training key, each row's state is reset to the
initial one (its previous-block K/V hidden) with that probability at each segment start.
``block_step`` is the one per-block function: training scans it, the streaming engine
(``gca_jax.inference.brt_engine``) calls it block by block.

Worked layout, L = 4, segment_blocks = 2: raw [a b c d e f g h i j] is padded to 12 tokens, blocks
[a b c d | e f g h | i j _ _]; token g attends to a..d and e..g, reads the state written by block
0; block 2 starts a segment, so no gradient reaches blocks 0-1 through its carry.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import flops
from gca_jax.modeling.interface import PREFILL, SCORE, LanguageModel, final_norm, token_embedding
from gca_jax.modeling.layers import Dense, RMSNorm, SwiGLU, to_dtype
from gca_jax.modeling.stack import make_stack, remat_body

ROPE_THETA = 10000.0  # rotary base of the self-attention
XPOS_SCALE_BASE = 512.0  # xPos: the rotary pair i decays by zeta_i ** (distance / this)


class BRTCarry(NamedTuple):
    """What one block leaves for the next.

    Attributes:
      k_NxBxLxHkvxd: every layer's keys of the previous block (before rotation), N = layers.
      v_NxBxLxHkvxd: every layer's values of the previous block.
      has_prev_B: whether a row has a previous block to attend to (False before the first).
      state_BxSxD: the recurrent state, float32 (S = ``brt.state_len``).
    """

    k_NxBxLxHkvxd: jax.Array
    v_NxBxLxHkvxd: jax.Array
    has_prev_B: jax.Array
    state_BxSxD: jax.Array


# -- pure maths ----------------------------------------------------------------------------------


def rope_xpos(x_BxMxHxd: jax.Array, pos_M: jax.Array, *, center: float, is_key: bool) -> jax.Array:
    """Rotary embedding with xPos scaling at positions ``pos_M`` (rotate-half pairs).

    Pair i of the rotation (frequency ROPE_THETA ** (-2i / d)) is scaled by
    zeta_i ** (+-(pos - center) / XPOS_SCALE_BASE), zeta_i = (2i + 0.4 d) / (1.4 d) < 1, with +
    for queries and - for keys, so a query-key logit decays as zeta_i ** (distance / base).
    ``center`` (the same for queries and keys) only keeps the factors near 1; it cancels in
    every logit.
    """
    d = x_BxMxHxd.shape[-1]
    two_i = jnp.arange(0, d, 2, dtype=jnp.float32)
    inv_freq = 1.0 / (ROPE_THETA ** (two_i / d))
    pos = pos_M.astype(jnp.float32)
    angles_Mxd = jnp.tile(pos[:, None] * inv_freq[None, :], (1, 2))
    zeta = (two_i + 0.4 * d) / (1.4 * d)
    power_M = (pos - center) / XPOS_SCALE_BASE * (-1.0 if is_key else 1.0)
    scale_Mxd = jnp.tile(zeta[None, :] ** power_M[:, None], (1, 2))
    x32 = x_BxMxHxd.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., d // 2 :], x32[..., : d // 2]], axis=-1)
    cos, sin = jnp.cos(angles_Mxd)[None, :, None], jnp.sin(angles_Mxd)[None, :, None]
    out = (x32 * cos + rotated * sin) * scale_Mxd[None, :, None]
    return out.astype(x_BxMxHxd.dtype)


def attend(
    q_BxQxHxd: jax.Array,
    k_BxKxHkvxd: jax.Array,
    v_BxKxHkvxd: jax.Array,
    mask_BxQxK: jax.Array | None = None,
) -> jax.Array:
    """Softmax attention (grouped heads: H / Hkv queries per K/V head), float32 logits.

    Every query row must see at least one key. Returns (B, Q, H, d) in q's dtype.
    """
    b, nq, h, d = q_BxQxHxd.shape
    hkv = k_BxKxHkvxd.shape[2]
    q = q_BxQxHxd.reshape(b, nq, hkv, h // hkv, d)
    logits = jnp.einsum("BQhgd,BKhd->BhgQK", q, k_BxKxHkvxd, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(d))
    if mask_BxQxK is not None:
        logits = jnp.where(mask_BxQxK[:, None, None], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_BxKxHkvxd.dtype)
    o = jnp.einsum("BhgQK,BKhd->BQhgd", probs, v_BxKxHkvxd, preferred_element_type=jnp.float32)
    return o.reshape(b, nq, h, d).astype(q_BxQxHxd.dtype)


def block_mask(has_prev_B: jax.Array, block_len: int) -> jax.Array:
    """(B, L, 2L) visibility of the keys [previous block | own block] to a block's queries.

    Query i sees key j iff j <= L + i, and the previous block's keys (j < L) only where the row
    has a previous block.

    Example, L = 2, has_prev: query 0 sees keys 0, 1, 2; query 1 sees 0..3.
    """
    i = jnp.arange(block_len)[:, None]
    j = jnp.arange(2 * block_len)[None, :]
    causal_LxM = j <= block_len + i
    own_LxM = j >= block_len
    return causal_LxM[None] & (own_LxM[None] | has_prev_B[:, None, None])


def fixed_gate(state_BxSxD: jax.Array, z_BxSxD: jax.Array, beta_D: jax.Array) -> jax.Array:
    """sigmoid(beta) * z + (1 - sigmoid(beta)) * state, per dimension."""
    g = jax.nn.sigmoid(beta_D.astype(jnp.float32))[None, None]
    return g * z_BxSxD + (1.0 - g) * state_BxSxD


# -- layers --------------------------------------------------------------------------------------


def _kw(cfg: ModelConfig, rngs: nnx.Rngs) -> dict:
    return dict(
        std=cfg.init_std,
        dtype=to_dtype(cfg.dtype),
        param_dtype=to_dtype(cfg.param_dtype),
        rngs=rngs,
    )


def _norm(cfg: ModelConfig) -> RMSNorm:
    return RMSNorm(
        cfg.hidden_size,
        eps=cfg.rms_norm_eps,
        param_dtype=to_dtype(cfg.param_dtype),
        out_dtype=to_dtype(cfg.dtype),
    )


class BRTLayer(nnx.Module):
    """Pre-norm layer: h += BlockAttn(norm(h)); h += SwiGLU(norm(h)).

    ``out_heads`` = 1 projects the self-attention output; the recurrent layer passes 2 (its
    self-attention and state-read outputs, concatenated).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, out_heads: int = 1):
        dim, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
        kw = _kw(cfg, rngs)
        self.input_norm = _norm(cfg)
        self.q_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.k_proj = Dense(dim, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.v_proj = Dense(dim, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.o_proj = Dense(out_heads * dim, dim, logical_axes=("heads", "embed"), **kw)
        self.post_norm = _norm(cfg)
        self.mlp = SwiGLU(dim, cfg.mlp_hidden, **kw)
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.head_dim

    def _heads(self, proj: Dense, x_BxLxD: jax.Array, heads: int) -> jax.Array:
        b, n, _ = x_BxLxD.shape
        return proj(x_BxLxD).reshape(b, n, heads, self.head_dim)

    def self_attention(self, x_BxLxD, prev_k, prev_v, has_prev_B):
        """Block attention of normed inputs; returns (o (B, L, H, d), (k, v) of this block)."""
        length = x_BxLxD.shape[1]
        q = self._heads(self.q_proj, x_BxLxD, self.num_heads)
        k = self._heads(self.k_proj, x_BxLxD, self.num_kv_heads)
        v = self._heads(self.v_proj, x_BxLxD, self.num_kv_heads)
        pos_M = jnp.arange(2 * length)
        keys = jnp.concatenate([prev_k.astype(k.dtype), k], axis=1)
        keys = rope_xpos(keys, pos_M, center=length, is_key=True)
        values = jnp.concatenate([prev_v.astype(v.dtype), v], axis=1)
        q_rot = rope_xpos(q, pos_M[length:], center=length, is_key=False)
        o = attend(q_rot, keys, values, block_mask(has_prev_B, length))
        return o, (k, v)

    def _residual(self, h_BxLxD, o_BxLxHxd):
        b, n = h_BxLxD.shape[:2]
        h_BxLxD = h_BxLxD + self.o_proj(o_BxLxHxd.reshape(b, n, -1)).astype(jnp.float32)
        return h_BxLxD + self.mlp(self.post_norm(h_BxLxD)).astype(jnp.float32)

    def __call__(self, h_BxLxD, prev_k, prev_v, has_prev_B):
        """(B, L, D) float32 residual stream in and out, with this block's (k, v)."""
        o, kv = self.self_attention(self.input_norm(h_BxLxD), prev_k, prev_v, has_prev_B)
        return self._residual(h_BxLxD, o), kv


class RecurrentLayer(BRTLayer):
    """A ``BRTLayer`` that also reads and writes the recurrent state (module docstring)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs, out_heads=2)
        bcfg = cfg.brt
        dim, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
        pdt = to_dtype(cfg.param_dtype)
        kw = _kw(cfg, rngs)
        init = jax.random.normal(rngs.params(), (bcfg.state_len, dim), jnp.float32) * 0.1
        self.initial_state = nnx.Param(init.astype(pdt), logical_axes=(None, "embed"))
        pos = jax.random.normal(rngs.params(), (bcfg.state_len, dim), jnp.float32)
        self.state_pos = nnx.Param(pos.astype(pdt), logical_axes=(None, "embed"))
        self.state_norm = _norm(cfg)
        self.read_q = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.state_q = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.state_k = Dense(dim, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.state_v = Dense(dim, kv, logical_axes=("embed", "kv_heads"), **kw)
        self.write_out = Dense(2 * dim, dim, logical_axes=("heads", "embed"), **kw)
        self.z_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.gate = bcfg.gate
        if bcfg.gate == "fixed":
            self.beta = nnx.Param(jnp.zeros((dim,), pdt), logical_axes=("norm",))
        else:
            self.forget = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
            self.input = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
            self.forget_bias = nnx.Param(jnp.zeros((dim,), pdt), logical_axes=("norm",))
            self.input_bias = nnx.Param(jnp.zeros((dim,), pdt), logical_axes=("norm",))

    def __call__(self, h_BxLxD, prev_k, prev_v, has_prev_B, state_BxSxD):
        """Returns (h, (k, v), new state float32 (B, S, D)); the read uses the old state."""
        x_BxLxD = self.input_norm(h_BxLxD)
        o_self, (k, v) = self.self_attention(x_BxLxD, prev_k, prev_v, has_prev_B)
        st = self.state_norm(state_BxSxD) + self.state_pos[...].astype(x_BxLxD.dtype)[None]
        sk = self._heads(self.state_k, st, self.num_kv_heads)
        sv = self._heads(self.state_v, st, self.num_kv_heads)
        o_read = attend(self._heads(self.read_q, x_BxLxD, self.num_heads), sk, sv)
        h_BxLxD = self._residual(h_BxLxD, jnp.concatenate([o_self, o_read], axis=-1))
        sq = self._heads(self.state_q, st, self.num_heads)
        w_self, w_block = attend(sq, sk, sv), attend(sq, k, v)
        b, s = st.shape[:2]
        both = jnp.concatenate([w_self, w_block], axis=-1).reshape(b, s, -1)
        z = self.z_proj(self.write_out(both)).astype(jnp.float32)
        return h_BxLxD, (k, v), self._update(state_BxSxD, z)

    def _update(self, state_BxSxD, z_BxSxD):
        if self.gate == "fixed":
            return fixed_gate(state_BxSxD, z_BxSxD, self.beta[...])
        b_f, b_i = self.forget_bias[...][None, None], self.input_bias[...][None, None]
        f = jax.nn.sigmoid(self.forget(z_BxSxD).astype(jnp.float32) + b_f + 1.0)
        i = jax.nn.sigmoid(self.input(z_BxSxD).astype(jnp.float32) + b_i - 1.0)
        return state_BxSxD * f + z_BxSxD * i


def _scan_layers(stack, h_BxLxD, k_NxBxLxHkvxd, v_NxBxLxHkvxd, has_prev_B):
    """Runs a stack of ``BRTLayer``s over one block; returns (h, new keys, new values)."""
    graphdef, params = nnx.split(stack)

    def body(h, xs):
        layer_params, k, v = xs
        h, kv = nnx.merge(graphdef, layer_params)(h, k, v, has_prev_B)
        return h, kv

    h_BxLxD, (k, v) = jax.lax.scan(body, h_BxLxD, (params, k_NxBxLxHkvxd, v_NxBxLxHkvxd))
    return h_BxLxD, k, v


# -- the model -----------------------------------------------------------------------------------


class BlockRecurrentLM(LanguageModel):
    """Block-Recurrent Transformer (``model.brt``): full forward and streaming prefill."""

    capabilities = frozenset({SCORE, PREFILL})
    engine = "gca_jax.inference.brt_engine:BRTEngine"

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.brt is None:
            raise ValueError(
                f"BlockRecurrentLM needs the model.brt section (model_type={cfg.model_type!r})"
            )
        self.cfg = cfg
        self.embed = token_embedding(cfg, rngs=rngs)
        below = cfg.brt.recurrent_layer - 1
        above = cfg.num_layers - cfg.brt.recurrent_layer
        self.below = make_stack(lambda r: BRTLayer(cfg, rngs=r), below, rngs) if below else None
        self.recurrent = RecurrentLayer(cfg, rngs=rngs)
        self.above = make_stack(lambda r: BRTLayer(cfg, rngs=r), above, rngs) if above else None
        self.final_norm = final_norm(cfg)

    def initial_carry(self, batch: int) -> BRTCarry:
        """The carry before the first block: no previous block, the learned initial state."""
        cfg = self.cfg
        shape = (cfg.num_layers, batch, cfg.brt.block_len, cfg.num_kv_heads, cfg.head_dim)
        zeros = jnp.zeros(shape, to_dtype(cfg.dtype))
        state = self.recurrent.initial_state[...].astype(jnp.float32)
        state_BxSxD = jnp.broadcast_to(state[None], (batch,) + state.shape)
        return BRTCarry(zeros, zeros, jnp.zeros((batch,), bool), state_BxSxD)

    def block_step(self, carry: BRTCarry, x_BxLxD: jax.Array) -> tuple[jax.Array, BRTCarry]:
        """One block: embeddings (B, L, D) float32 -> final-normed states (B, L, D), new carry.

        The one implementation of the layer maths: training scans it, the engine streams it.
        """
        r = self.cfg.brt.recurrent_layer - 1
        k, v, has_prev = carry.k_NxBxLxHkvxd, carry.v_NxBxLxHkvxd, carry.has_prev_B
        h, kvs = x_BxLxD, []
        if self.below is not None:
            h, kb, vb = _scan_layers(self.below, h, k[:r], v[:r], has_prev)
            kvs.append((kb, vb))
        h, (kr, vr), state = self.recurrent(h, k[r], v[r], has_prev, carry.state_BxSxD)
        kvs.append((kr[None], vr[None]))
        if self.above is not None:
            h, ka, va = _scan_layers(self.above, h, k[r + 1 :], v[r + 1 :], has_prev)
            kvs.append((ka, va))
        new_k = jnp.concatenate([kl.astype(k.dtype) for kl, _ in kvs], axis=0)
        new_v = jnp.concatenate([vl.astype(v.dtype) for _, vl in kvs], axis=0)
        new_carry = BRTCarry(new_k, new_v, jnp.ones_like(has_prev), state)
        return self.final_norm(h), new_carry

    def _segment_start(self, carry: BRTCarry, key: jax.Array | None) -> BRTCarry:
        """The carry at a segment start: no gradient through it; the optional dropouts."""
        carry = jax.tree.map(jax.lax.stop_gradient, carry)
        bcfg = self.cfg.brt
        if key is None or (bcfg.state_dropout == 0 and bcfg.memory_dropout == 0):
            return carry
        b = carry.has_prev_B.shape[0]
        state_key, memory_key = jax.random.split(key)
        reset_B = jax.random.bernoulli(state_key, bcfg.state_dropout, (b,))
        hide_B = jax.random.bernoulli(memory_key, bcfg.memory_dropout, (b,))
        init = self.recurrent.initial_state[...].astype(jnp.float32)[None]
        state = jnp.where(reset_B[:, None, None], init, carry.state_BxSxD)
        return carry._replace(has_prev_B=carry.has_prev_B & ~hide_B, state_BxSxD=state)

    def hidden_from_embeddings(
        self, x_BxTxD: jax.Array, *, key: jax.Array | None = None
    ) -> jax.Array:
        """Embeddings (B, T, D), T a multiple of L -> final-normed states (B, T, D).

        ``key`` (training only) draws the segment-start dropouts; None = none.
        """
        b, t, dim = x_BxTxD.shape
        length, seg = self.cfg.brt.block_len, self.cfg.brt.segment_blocks
        x_NxBxLxD = x_BxTxD.reshape(b, t // length, length, dim).swapaxes(0, 1)

        def body(carry, xs):
            i, x_BxLxD = xs
            block_key = None if key is None else jax.random.fold_in(key, i)
            cut = self._segment_start(carry, block_key)
            starts = (i % seg == 0) & (i > 0)
            carry = jax.tree.map(lambda c, s: jnp.where(starts, s, c), carry, cut)
            h_BxLxD, carry = self.block_step(carry, x_BxLxD)
            return carry, h_BxLxD

        body = remat_body(body, self.cfg.remat)
        blocks = jnp.arange(t // length)
        _, h_NxBxLxD = jax.lax.scan(body, self.initial_carry(b), (blocks, x_NxBxLxD))
        return h_NxBxLxD.swapaxes(0, 1).reshape(b, t, dim)

    def embed_blocks(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T) tokens, right-padded with padding ids to a multiple of L -> (B, T', D) float32."""
        t = tokens_BxT.shape[1]
        pad = -t % self.cfg.brt.block_len
        return self.embed(jnp.pad(tokens_BxT, ((0, 0), (0, pad)), constant_values=-1))

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed states (B, T, D) at raw positions; ``gumbel_key`` draws the dropouts.

        T need not be a multiple of L: the last block is right-padded (never a target).
        """
        h_BxTxD = self.hidden_from_embeddings(self.embed_blocks(tokens_BxT), key=gumbel_key)
        return h_BxTxD[:, : tokens_BxT.shape[1]], {}

    @classmethod
    def flops_per_token(cls, cfg: ModelConfig, seq_len: int) -> float:
        """Training FLOPs per raw token at T = seq_len (``gca_jax.modeling.flops``).

        Convention: the layers run over the N * L positions of N = ceil(T / L) blocks. A query
        sees (L + 1) / 2 keys of its own block on average plus L of the previous block (none in
        the first). The recurrent layer adds, per position, the read query and the wider output
        projection (2 D^2) and S state keys; per block, its S state vectors' projections (q, k,
        v, the write output 2D -> D, z, and for ``lstm`` the two gates) and attention over S + L
        keys. The head runs on raw tokens.
        """
        bcfg = cfg.brt
        d, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
        length, s = bcfg.block_len, bcfg.state_len
        blocks = -(-seq_len // length)
        context = (length + 1) / 2 + length * (blocks - 1) / blocks
        layers = cfg.num_layers * flops.forward_flops(flops.decoder_layer_weights(cfg), context, d)
        read = flops.forward_flops(2 * d * d, s, d)
        gates = 2 * d * d if bcfg.gate == "lstm" else 0
        state_weights = d * d + 2 * d * kv + 2 * d * d + d * d + gates  # q, k, v, write, z
        write = s * flops.forward_flops(state_weights, s + length, d) / length
        per_token = (layers + read + write) * blocks * length / seq_len + 2 * d * cfg.vocab_size
        return flops.TRAIN_FACTOR * per_token
