"""DRT: sliding-window decoder + chunk encoder + grouped cross attention over retrieved chunks.

Data flow (DESIGN.md §3): tokens (B, T) -> landmarks inserted (B, C, P) -> embed -> lower
stack -> chunk encoder -> ChunkMemory -> per group: retrieval, upper stack -> final norm ->
tied head. The residual stream is float32; sub-layers compute in the config's dtype.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import retrieval as ret_lib
from gca_jax.modeling.blocks import DecoderLayer, EncoderLayer, UpperLayer
from gca_jax.modeling.chunking import insert_landmarks
from gca_jax.modeling.layers import Dense, Embedding, RMSNorm, to_dtype
from gca_jax.modeling.loss import next_token_loss, tied_logits
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from gca_jax.modeling.stack import apply_stack, make_stack
from gca_jax.sharding import constrain_batch


class DRT(nnx.Module):
    """The DRT language model (spec §1), ret x G for ``decoder_layers = [n0, n1, ..., nG]``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.model_type != "drt":
            raise ValueError(f"DRT needs model_type='drt', got {cfg.model_type!r}")
        self.cfg = cfg
        pdt, f32 = to_dtype(cfg.param_dtype), jnp.float32
        dim = cfg.hidden_size
        self.embed = Embedding(
            cfg.vocab_size, dim, pad_id=cfg.pad_id, std=cfg.init_std, param_dtype=pdt, rngs=rngs
        )
        self.lower = make_stack(lambda r: DecoderLayer(cfg, rngs=r), cfg.decoder_layers[0], rngs)
        self.enc_prenorm = RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=f32)
        self.encoder = make_stack(lambda r: EncoderLayer(cfg, rngs=r), cfg.encoder_layers, rngs)
        self.enc_norm = RMSNorm(dim, eps=cfg.encoder_rms_norm_eps, param_dtype=pdt, out_dtype=f32)
        kw = dict(std=cfg.init_std, dtype=to_dtype(cfg.dtype), param_dtype=pdt, rngs=rngs)
        # One K/V projection pair for the whole model, shared by every upper layer (spec §1.7).
        self.chunk_k_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.chunk_v_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.lmk_norms = nnx.List(
            [
                RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=f32)
                for _ in range(cfg.num_groups)
            ]
        )
        self.groups = nnx.List(
            [make_stack(lambda r: UpperLayer(cfg, rngs=r), n, rngs) for n in cfg.decoder_layers[1:]]
        )
        self.final_norm = RMSNorm(
            dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=to_dtype(cfg.dtype)
        )

    # -- pieces, shared with the inference path ------------------------------------------------

    def embed_chunks(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T) raw tokens -> (B, C*P, D) float32 embeddings with landmarks inserted."""
        cfg = self.cfg
        ids_BxCxP = insert_landmarks(
            tokens_BxT, chunk_len=cfg.chunk_len, landmark_id=cfg.landmark_id
        )
        b, c, p = ids_BxCxP.shape
        return self.embed(ids_BxCxP.reshape(b, c * p))

    def encode_chunks(self, h_low_BxCxPxD: jax.Array) -> ChunkMemory:
        """Chunk encoder over the lower-stack output, then landmarks and K/V (spec §1.6-1.7)."""
        cfg = self.cfg
        b, c, p, dim = h_low_BxCxPxD.shape
        x_NxPxD = self.enc_prenorm(h_low_BxCxPxD.reshape(b * c, p, dim))
        z_NxPxD = self.enc_norm(apply_stack(self.encoder, x_NxPxD, remat=cfg.remat))
        landmarks_BxExD = z_NxPxD[:, p - 1].reshape(b, c, dim)
        if not cfg.gca_null_slot:
            z_NxPxD = z_NxPxD[:, : cfg.chunk_len]  # drop the landmark slot: vanilla softmax
        slots = z_NxPxD.shape[1]
        shape = (b, c, slots, cfg.num_heads, cfg.head_dim)
        z_NxPxD = constrain_batch(z_NxPxD)
        keys = constrain_batch(self.chunk_k_proj(z_NxPxD)).reshape(shape)
        values = constrain_batch(self.chunk_v_proj(z_NxPxD)).reshape(shape)
        if cfg.gca_null_slot:
            # Zero K/V at the landmark slot: a logit-0, value-0 sink = off-by-one softmax.
            keep = (jnp.arange(slots) != p - 1).reshape(1, 1, slots, 1, 1)
            keys, values = jnp.where(keep, keys, 0), jnp.where(keep, values, 0)
        return ChunkMemory(landmarks=landmarks_BxExD, keys=keys, values=values)

    def retrieve(
        self,
        group: int,
        h_BxCxPxD: jax.Array,
        memory: ChunkMemory,
        row_ids_C: jax.Array,
        gumbel_key: jax.Array | None,
    ) -> Retrieval:
        """Row-aligned retrieval of group ``group`` from each chunk's landmark state."""
        query_BxCxD = self.lmk_norms[group](h_BxCxPxD[:, :, -1])
        scores = ret_lib.retrieval_scores(query_BxCxD, memory.landmarks)
        valid = ret_lib.causal_mask(row_ids_C, memory.num_chunks)
        return ret_lib.select_rows(scores, valid, top_k=self.cfg.chunk_topk, gumbel_key=gumbel_key)

    def run_group(
        self, group: int, h_BxLxD: jax.Array, memory: ChunkMemory, ret: Retrieval
    ) -> jax.Array:
        """The upper layers of one group, given query-aligned retrieval."""
        return apply_stack(self.groups[group], h_BxLxD, memory, ret, remat=self.cfg.remat)

    # -- full-sequence forward -----------------------------------------------------------------

    def hidden_states(
        self, tokens_BxT: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, C, P, D) and retrieval statistics.

        Args:
          tokens_BxT: raw token ids, T a multiple of S; negative ids are padding.
          gumbel_key: PRNG key for Gumbel-top-k selection (training); None = plain top-k.
        """
        return self.hidden_from_embeddings(self.embed_chunks(tokens_BxT), gumbel_key=gumbel_key)

    def hidden_from_embeddings(
        self, h_BxLxD: jax.Array, *, gumbel_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``hidden_states`` from landmark-inserted embeddings (B, C*P, D)."""
        cfg = self.cfg
        b, seq, _ = h_BxLxD.shape
        p = cfg.slots_per_chunk
        c = seq // p
        h_BxLxD = apply_stack(self.lower, h_BxLxD, remat=cfg.remat)
        memory = self.encode_chunks(h_BxLxD.reshape(b, c, p, -1))
        chunk_ids_C = jnp.arange(c)
        stats = {}
        for g in range(cfg.num_groups):
            key = None if gumbel_key is None else jax.random.fold_in(gumbel_key, g)
            rows = self.retrieve(g, h_BxLxD.reshape(b, c, p, -1), memory, chunk_ids_C, key)
            ret = ret_lib.lag_one_chunk(rows)
            h_BxLxD = self.run_group(g, h_BxLxD, memory, ret)
            stats.update(
                {f"{k}_g{g}": v for k, v in ret_lib.retrieval_stats(ret, chunk_ids_C).items()}
            )
        return self.final_norm(h_BxLxD).reshape(b, c, p, -1), stats

    def loss(
        self,
        tokens_BxT: jax.Array,
        *,
        gumbel_key: jax.Array | None = None,
        weights_BxT: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-token CE over raw tokens (landmark slots never predicted, spec §1.12).

        ``weights_BxT``, when given, weighs each predicted token (see ``next_token_loss``).
        """
        h_BxCxPxD, stats = self.hidden_states(tokens_BxT, gumbel_key=gumbel_key)
        b, t = tokens_BxT.shape
        h_BxTxD = h_BxCxPxD[:, :, : self.cfg.chunk_len].reshape(b, t, -1)
        loss, aux = next_token_loss(
            h_BxTxD,
            self.embed.table[...],
            tokens_BxT,
            block=self.cfg.loss_block,
            weights_BxT=weights_BxT,
        )
        return loss, {**aux, **stats}

    def logits(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T, V) float32 logits at raw-token positions (landmark slots removed)."""
        h_BxCxPxD, _ = self.hidden_states(tokens_BxT)
        b = h_BxCxPxD.shape[0]
        h_BxTxD = h_BxCxPxD[:, :, : self.cfg.chunk_len].reshape(b, tokens_BxT.shape[1], -1)
        return tied_logits(h_BxTxD, self.embed.table[...])
