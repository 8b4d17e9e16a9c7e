"""DRT: sliding-window decoder + chunk encoder + grouped cross attention over retrieved chunks.

Data flow (docs/architecture.md, "One training step"): tokens (B, T) -> landmarks inserted
(B, C, P) -> embed -> lower stack -> chunk encoder -> ChunkMemory -> per group: retrieval, upper
stack -> final norm -> tied head. The residual stream is float32; sub-layers compute in the
config's dtype. The pieces (``embed_chunks``, ``encode_chunks``, ``retrieve``, the stacks) are
also what segmented prefill and decoding (``gca_jax.inference``) call, with layer caches.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import flops
from gca_jax.modeling import retrieval as ret_lib
from gca_jax.modeling.blocks import DecoderLayer, EncoderLayer, UpperLayer
from gca_jax.modeling.chunking import insert_landmarks
from gca_jax.modeling.interface import (
    DECODE,
    PREFILL,
    RETRIEVAL,
    SCORE,
    LanguageModel,
    final_norm,
    token_embedding,
)
from gca_jax.modeling.layers import Dense, RMSNorm, to_dtype
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from gca_jax.modeling.stack import apply_stack, make_stack
from gca_jax.sharding import constrain_batch

# ``override(group, rows, row_ids_C) -> rows``: replaces a group's row-aligned retrieval (oracle
# diagnostics and tests, e.g. ``retrieval.force_rows``); called inside the traced forward.
RetrievalOverride = Callable[[int, Retrieval, jax.Array], Retrieval]

_STATS = ("ret_top_weight", "ret_entropy", "ret_distance")


class DRT(LanguageModel):
    """The DRT language model (docs/spec.md §1), ret x G with G = len(retrieval.group_layers)."""

    capabilities = frozenset({SCORE, PREFILL, DECODE, RETRIEVAL})
    engine = "gca_jax.inference.engine:Engine"

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.retrieval is None:
            raise ValueError(
                f"DRT needs the model.retrieval section (model_type={cfg.model_type!r})"
            )
        self.cfg = cfg
        rcfg = cfg.retrieval
        pdt, f32 = to_dtype(cfg.param_dtype), jnp.float32
        dim = cfg.hidden_size
        self.embed = token_embedding(cfg, rngs=rngs)
        lower = cfg.num_layers - sum(rcfg.group_layers)
        self.lower = make_stack(lambda r: DecoderLayer(cfg, rngs=r), lower, rngs)
        self.enc_prenorm = RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=f32)
        self.encoder = make_stack(lambda r: EncoderLayer(cfg, rngs=r), rcfg.encoder_layers, rngs)
        self.enc_norm = RMSNorm(dim, eps=rcfg.encoder_rms_norm_eps, param_dtype=pdt, out_dtype=f32)
        kw = dict(std=cfg.init_std, dtype=to_dtype(cfg.dtype), param_dtype=pdt, rngs=rngs)
        # One K/V projection pair for the whole model, shared by every upper layer
        # (docs/spec.md §1.7).
        self.chunk_k_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.chunk_v_proj = Dense(dim, dim, logical_axes=("embed", "heads"), **kw)
        self.lmk_norms = nnx.List(
            [
                RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, out_dtype=f32)
                for _ in range(rcfg.num_groups)
            ]
        )
        self.groups = nnx.List(
            [make_stack(lambda r: UpperLayer(cfg, rngs=r), n, rngs) for n in rcfg.group_layers]
        )
        self.final_norm = final_norm(cfg)

    # -- pieces, shared with the inference path ------------------------------------------------

    @property
    def landmark_dim(self) -> int:
        """Width of a memory row's retrieval key (the inference store allocates it): D."""
        return self.cfg.hidden_size

    def embed_chunks(self, tokens_BxT: jax.Array) -> jax.Array:
        """(B, T) raw tokens -> (B, C*P, D) float32 embeddings with landmarks inserted."""
        ids_BxCxP = insert_landmarks(
            tokens_BxT, chunk_len=self.cfg.retrieval.chunk_len, landmark_id=self.cfg.landmark_id
        )
        b, c, p = ids_BxCxP.shape
        return self.embed(ids_BxCxP.reshape(b, c * p))

    def encode_chunks(self, h_low_BxCxPxD: jax.Array) -> ChunkMemory:
        """Chunk encoder over the lower output, then landmarks and K/V (docs/spec.md §1.6-1.7)."""
        cfg, rcfg = self.cfg, self.cfg.retrieval
        b, c, p, dim = h_low_BxCxPxD.shape
        x_NxPxD = self.enc_prenorm(h_low_BxCxPxD.reshape(b * c, p, dim))
        z_NxPxD = self.enc_norm(apply_stack(self.encoder, x_NxPxD, remat=cfg.remat))
        landmarks_BxExD = z_NxPxD[:, p - 1].reshape(b, c, dim)
        if not rcfg.null_slot:
            z_NxPxD = z_NxPxD[:, : rcfg.chunk_len]  # drop the landmark slot: vanilla softmax
        slots = z_NxPxD.shape[1]
        shape = (b, c, slots, cfg.num_heads, cfg.head_dim)
        z_NxPxD = constrain_batch(z_NxPxD)
        keys = constrain_batch(self.chunk_k_proj(z_NxPxD)).reshape(shape)
        values = constrain_batch(self.chunk_v_proj(z_NxPxD)).reshape(shape)
        if rcfg.null_slot:
            # Zero K/V at the landmark slot: a logit-0, value-0 sink = off-by-one softmax.
            keep = (jnp.arange(slots) != p - 1).reshape(1, 1, slots, 1, 1)
            keys, values = jnp.where(keep, keys, 0), jnp.where(keep, values, 0)
        return ChunkMemory(landmarks=landmarks_BxExD, keys=keys, values=values)

    def build_memory(self, h_low_BxCxPxD: jax.Array, tokens_BxT: jax.Array | None) -> ChunkMemory:
        """The memory rows of C chunks from the lower output; DRT's read no token ids.

        A hook for retrievers keyed on the chunks' tokens (``gca_jax.modeling.rpt``).
        """
        del tokens_BxT  # DRT's retrieval keys come from the encoder
        return self.encode_chunks(h_low_BxCxPxD)

    def retrieve(
        self,
        group: int,
        h_BxCxPxD: jax.Array,
        landmarks_BxExD: jax.Array,
        row_ids_C: jax.Array,
        gumbel_key: jax.Array | None = None,
    ) -> Retrieval:
        """Row-aligned retrieval of group ``group`` from each chunk's landmark state.

        Args:
          group: retrieval group index.
          h_BxCxPxD: the stream entering the group; only the landmark slot (P - 1) is read.
          landmarks_BxExD: landmark keys of the memory (E rows, global ids 0..E-1).
          row_ids_C: global chunk id of each row; row r may select memory rows e < r.
          gumbel_key: Gumbel-top-k noise (training); None = plain top-k.
        """
        query_BxCxD = self.lmk_norms[group](h_BxCxPxD[:, :, -1])
        scores = ret_lib.retrieval_scores(query_BxCxD, landmarks_BxExD)
        valid = ret_lib.causal_mask(row_ids_C, landmarks_BxExD.shape[1])
        return ret_lib.select_rows(
            scores, valid, top_k=self.cfg.retrieval.top_k, gumbel_key=gumbel_key
        )

    # -- full-sequence forward -----------------------------------------------------------------

    def hidden_states(
        self,
        tokens_BxT: jax.Array,
        *,
        gumbel_key: jax.Array | None = None,
        retrieval_override: RetrievalOverride | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed hidden states (B, T, D) at raw-token positions and retrieval statistics.

        Args:
          tokens_BxT: raw token ids, T a multiple of S; negative ids are padding.
          gumbel_key: PRNG key for Gumbel-top-k selection (training); None = plain top-k.
          retrieval_override: replaces each group's row-aligned retrieval (diagnostics).
        """
        b, t = tokens_BxT.shape
        h_BxCxPxD, stats = self.hidden_from_embeddings(
            self.embed_chunks(tokens_BxT),
            gumbel_key=gumbel_key,
            retrieval_override=retrieval_override,
            tokens_BxT=tokens_BxT,
        )
        return h_BxCxPxD[:, :, : self.cfg.retrieval.chunk_len].reshape(b, t, -1), stats

    def hidden_from_embeddings(
        self,
        h_BxLxD: jax.Array,
        *,
        gumbel_key: jax.Array | None = None,
        retrieval_override: RetrievalOverride | None = None,
        tokens_BxT: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Final-normed states (B, C, P, D), landmarks included, from embeddings (B, C*P, D).

        ``tokens_BxT``, the raw tokens of the embeddings, only reaches ``build_memory``.
        """
        cfg = self.cfg
        b, seq, _ = h_BxLxD.shape
        p = cfg.retrieval.slots_per_chunk
        c = seq // p
        h_BxLxD = apply_stack(self.lower, h_BxLxD, remat=cfg.remat)
        memory = self.build_memory(h_BxLxD.reshape(b, c, p, -1), tokens_BxT)
        chunk_ids_C = jnp.arange(c)
        stats = {}
        for g in range(cfg.retrieval.num_groups):
            key = None if gumbel_key is None else jax.random.fold_in(gumbel_key, g)
            h_BxCxPxD = h_BxLxD.reshape(b, c, p, -1)
            rows = self.retrieve(g, h_BxCxPxD, memory.landmarks, chunk_ids_C, key)
            if retrieval_override is not None:
                rows = retrieval_override(g, rows, chunk_ids_C)
            ret = ret_lib.lag_one_chunk(rows)
            h_BxLxD = apply_stack(self.groups[g], h_BxLxD, memory, ret, remat=cfg.remat)
            stats.update(
                {f"{k}_g{g}": v for k, v in ret_lib.retrieval_stats(ret, chunk_ids_C).items()}
            )
        return self.final_norm(h_BxLxD).reshape(b, c, p, -1), stats

    # -- what the registry asks of a model type -------------------------------------------------

    @classmethod
    def stat_names(cls, cfg: ModelConfig) -> tuple[str, ...]:
        """Per group g: mean top weight, weight entropy and chunk distance of its retrieval."""
        return tuple(f"{k}_g{g}" for g in range(cfg.retrieval.num_groups) for k in _STATS)

    @classmethod
    def flops_per_token(cls, cfg: ModelConfig, seq_len: int) -> float:
        """Decoder, chunk encoder, chunk K/V, GCA and head FLOPs on C * P positions, per raw token.

        Every decoder layer runs on the landmark-inserted positions (P / S of them per raw
        token); upper layers add the GCA q/o projections and K * P' keys, the encoder adds its
        layers over P slots, and the chunk K/V projections run once.
        """
        rcfg, d = cfg.retrieval, cfg.hidden_size
        positions = seq_len * rcfg.slots_per_chunk // rcfg.chunk_len
        upper = sum(rcfg.group_layers)
        enc_weights = 4 * d * d + 3 * d * cfg.mlp_hidden
        weights = (
            cfg.num_layers * flops.decoder_layer_weights(cfg)
            + d * cfg.vocab_size
            + upper * 2 * d * d
            + rcfg.encoder_layers * enc_weights
            + 2 * d * d
        )
        context = (
            cfg.num_layers * flops.window_context(cfg.window, positions)
            + upper * rcfg.top_k * rcfg.memory_slots
            + rcfg.encoder_layers * rcfg.slots_per_chunk
        )
        forward = flops.forward_flops(weights, context, d)
        return flops.TRAIN_FACTOR * forward * positions / seq_len
