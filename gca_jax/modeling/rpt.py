"""RPT-style baseline with a fixed retriever: DRT's layout, retrieval scores from BM25.

The paper's RPT_Contriever baseline retrieves with a frozen Contriever, whose weights are not
available offline; this model is "RPT-style, fixed BM25 retriever" (docs/architecture.md,
"Model types"). Everything but the retriever is DRT (``gca_jax.modeling.drt``): lower decoder,
chunk encoder, upper layers with GCA over the retrieved chunks, the same kernel, the same causal
rule (row r selects among chunks e < r; chunk c uses row c - 1, so it reads chunks <= c - 2) and
top K. Only the retrieval keys and queries differ:

- ``retriever: bm25``: each chunk's memory "landmark" is its hashed BM25 document vector over
  its S raw token ids (``gca_jax.modeling.bm25``; width = ``model.rpt.buckets``), and a chunk's
  query is the idf-weighted indicator of its own terms, derived from that same vector; the score
  q . d is BM25. The idf is a constant read from ``model.rpt.idf_path`` at construction (not a
  parameter: no gradient, no weight decay); null means uniform idf (with a warning).
- ``retriever: precomputed``: ``model.rpt.vectors_fn`` names a function ``"package.module:fn"``
  mapping chunk token ids (B, C, S) int32 (padding = pad_id) to dense vectors (B, C, R); a chunk
  is both a key and (with its own vector) a query, scored by dot product, as a dense retriever
  such as Contriever does. It must be jittable (e.g. a table lookup, a JAX encoder, or
  ``jax.pure_callback`` around a host retriever).

The scores carry no gradient (``stop_gradient``; they depend on no parameter anyway) and no
Gumbel noise; the GCA weights are softmax(score_scale * score) over the K selected chunks. Since
the memory rows are plain vectors and scoring is a dot product, segmented prefill, host offload
and decoding run DRT's engine unchanged; the store's landmark width is ``landmark_dim``.
"""

import dataclasses
import functools
import hashlib
import importlib
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.config import ModelConfig
from gca_jax.modeling import bm25
from gca_jax.modeling import retrieval as ret_lib
from gca_jax.modeling.drt import DRT
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval

_log = logging.getLogger(__name__)


class _Constant:
    """A read-only numpy array held as static model data: hashed and compared by its digest."""

    __slots__ = ("array", "digest")

    def __init__(self, array: np.ndarray):
        self.array = np.array(array, np.float32)
        self.array.setflags(write=False)
        self.digest = hashlib.sha256(self.array.tobytes()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Constant) and other.digest == self.digest


@dataclasses.dataclass(frozen=True)
class BM25Retriever:
    """BM25 over hashed token ids (``gca_jax.modeling.bm25``), parameters fixed at construction."""

    idf: _Constant
    buckets: int
    vocab_size: int
    pad_id: int
    k1: float
    b: float
    avg_len: float

    @property
    def width(self) -> int:
        """N, the width of a chunk vector."""
        return self.buckets

    def chunk_vectors(self, tokens_BxCxS: jax.Array) -> jax.Array:
        """(B, C, N) BM25 document vectors."""
        return bm25.document_vectors(
            tokens_BxCxS,
            buckets=self.buckets,
            vocab_size=self.vocab_size,
            pad_id=self.pad_id,
            k1=self.k1,
            b=self.b,
            avg_len=self.avg_len,
        )

    def queries(self, vectors_BxCxN: jax.Array) -> jax.Array:
        """(B, C, N) query vectors of the chunks whose document vectors are given."""
        return bm25.query_vectors(vectors_BxCxN, jnp.asarray(self.idf.array))


@dataclasses.dataclass(frozen=True)
class PrecomputedRetriever:
    """Dense chunk vectors from a caller's function; a chunk's query is its own vector."""

    fn: Callable[[jax.Array], jax.Array]
    pad_id: int
    width: int

    def chunk_vectors(self, tokens_BxCxS: jax.Array) -> jax.Array:
        """(B, C, R) float32 vectors of the caller's function (padding passed as pad_id)."""
        ids = jnp.where(tokens_BxCxS < 0, self.pad_id, tokens_BxCxS).astype(jnp.int32)
        return self.fn(ids).astype(jnp.float32)

    def queries(self, vectors_BxCxR: jax.Array) -> jax.Array:
        """The chunks' own vectors."""
        return vectors_BxCxR


def _import_function(spec: str) -> Callable:
    """The function "package.module:name" names; a clear error when it cannot be imported."""
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f"model.rpt.vectors_fn={spec!r} must be an importable 'package.module:function' ({e})"
        ) from e
    if not callable(fn):
        raise ValueError(f"model.rpt.vectors_fn={spec!r} is not callable")
    return fn


@functools.cache
def _warn_uniform_idf(chunk_len: int) -> None:
    """Warns once per process (a run builds its model several times)."""
    _log.warning(
        "RPT with uniform idf (model.rpt.idf_path: null): BM25 without corpus document "
        "frequencies; the baseline uses `python -m train.prepare --bm25-idf CORPUS_DIR "
        "--chunk_len %d` and model.rpt.idf_path=CORPUS_DIR/%s",
        chunk_len,
        bm25.IDF_FILE,
    )


def _bm25_retriever(cfg: ModelConfig) -> BM25Retriever:
    """The BM25 retriever of ``cfg``, with its idf read and checked against the config."""
    rpt, s = cfg.rpt, cfg.retrieval.chunk_len
    buckets = rpt.buckets or cfg.vocab_size
    if rpt.idf_path is None:
        _warn_uniform_idf(s)
        idf, avg_len = np.ones((buckets,), np.float32), float(s)
    else:
        idf, params = bm25.read_idf(rpt.idf_path)
        want = {"buckets": buckets, "hash": bm25.hash_name(buckets, cfg.vocab_size), "chunk_len": s}
        diffs = [f"{k}: file {params.get(k)!r} vs model {v!r}" for k, v in want.items()
                 if params.get(k) != v]  # fmt: skip
        if diffs:
            raise ValueError(
                f"BM25 idf {rpt.idf_path} does not match the model ({'; '.join(diffs)}); "
                f"recompute it with `python -m train.prepare --bm25-idf CORPUS_DIR --chunk_len "
                f"{s}" + (f" --buckets {buckets}`" if buckets != cfg.vocab_size else "`")
            )
        avg_len = float(params["avg_len"])
        _log.info(
            "RPT idf: %s (%d buckets, %s chunks)", rpt.idf_path, buckets, params["num_chunks"]
        )
    return BM25Retriever(
        idf=_Constant(idf),
        buckets=buckets,
        vocab_size=cfg.vocab_size,
        pad_id=cfg.pad_id,
        k1=rpt.k1,
        b=rpt.b,
        avg_len=max(avg_len, 1e-6),
    )


def make_retriever(cfg: ModelConfig) -> BM25Retriever | PrecomputedRetriever:
    """The fixed retriever ``cfg.rpt`` describes.

    Raises:
      FileNotFoundError: the idf file is missing (the message gives the prepare command).
      ValueError: the idf file does not match the config, or vectors_fn is not usable.
    """
    if cfg.rpt.retriever == "bm25":
        return _bm25_retriever(cfg)
    fn = _import_function(cfg.rpt.vectors_fn)
    probe = jnp.zeros((1, 1, cfg.retrieval.chunk_len), jnp.int32)
    out = jax.eval_shape(fn, probe)
    if len(out.shape) != 3 or out.shape[:2] != (1, 1):
        raise ValueError(
            f"model.rpt.vectors_fn={cfg.rpt.vectors_fn!r} must map (B, C, S) token ids to "
            f"(B, C, R) vectors; it gave {out.shape} for (1, 1, S)"
        )
    return PrecomputedRetriever(fn=fn, pad_id=cfg.pad_id, width=int(out.shape[-1]))


class RPT(DRT):
    """RPT-style language model with a fixed retriever (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.rpt is None:
            raise ValueError(f"RPT needs the model.rpt section (model_type={cfg.model_type!r})")
        super().__init__(cfg, rngs=rngs)
        # DRT's landmark norms only shape its learned queries; a fixed retriever has none.
        del self.lmk_norms
        self.retriever = make_retriever(cfg)

    @property
    def landmark_dim(self) -> int:
        """Width of a memory row's retrieval key: the retriever's chunk vector."""
        return self.retriever.width

    def build_memory(self, h_low_BxCxPxD: jax.Array, tokens_BxT: jax.Array | None) -> ChunkMemory:
        """DRT's chunk K/V, with each row's retrieval key = its fixed chunk vector (B, C, N)."""
        if tokens_BxT is None:
            raise ValueError("RPT's retriever reads the chunks' token ids: pass tokens_BxT")
        b, c = h_low_BxCxPxD.shape[:2]
        memory = self.encode_chunks(h_low_BxCxPxD)
        vectors = self.retriever.chunk_vectors(tokens_BxT.reshape(b, c, -1))
        return memory.replace(landmarks=jax.lax.stop_gradient(vectors))

    def retrieve(
        self,
        group: int,
        h_BxCxPxD: jax.Array,
        landmarks_BxExD: jax.Array,
        row_ids_C: jax.Array,
        gumbel_key: jax.Array | None = None,
    ) -> Retrieval:
        """Top-K rows by the fixed score, for rows ``row_ids_C`` (already in the memory).

        Row r's query comes from memory row r itself (its chunk's vector), so the stream
        ``h_BxCxPxD`` is not read; every group retrieves the same, and ``gumbel_key`` is ignored
        (exploration noise only helps a learned retriever).
        """
        del group, h_BxCxPxD, gumbel_key
        keys_BxExN = jax.lax.stop_gradient(landmarks_BxExD)
        queries_BxCxN = self.retriever.queries(jnp.take(keys_BxExN, row_ids_C, axis=1))
        scores = self.cfg.rpt.score_scale * bm25.dot_scores(queries_BxCxN, keys_BxExN)
        valid = ret_lib.causal_mask(row_ids_C, keys_BxExN.shape[1])
        return ret_lib.select_rows(scores, valid, top_k=self.cfg.retrieval.top_k, gumbel_key=None)
