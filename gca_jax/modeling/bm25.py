"""BM25 over hashed token ids, written as a dot product (the fixed retriever of RPT).

A term is a bucket of token ids: ``bucket_ids`` maps id t to itself when there are at least as
many buckets as vocabulary ids (the identity hash), else to a fixed 32-bit integer hash of t
modulo the bucket count. Documents and queries are chunks of S raw tokens; padding (negative
ids, and ``pad_id``) is no term and does not count towards a chunk's length. Then

    score(q, d) = sum over distinct terms h of q:  idf[h] * tf(h, d) (k1 + 1)
                                                    / (tf(h, d) + k1 (1 - b + b |d| / avg_len))

is exactly ``query_vector(q) . document_vector(d)``, with the document vector holding the
saturated term frequencies (width = the bucket count) and the query vector the idf of the
terms present. With the identity hash this is plain BM25 over token ids; with fewer buckets it
is plain BM25 over the hashed token sequence (colliding ids count as one term). The query vector
is a function of the chunk's own document vector (its non-zero entries), so a memory that keeps
only the document vectors also gives every chunk's query.

idf[h] = log(1 + (N - n_h + 0.5) / (n_h + 0.5)) over the N chunks of the training corpus, n_h
of them containing h (``idf_from_counts``; ``train.prepare --bm25-idf`` writes it, see
docs/data.md). Everything here is pure ``jnp`` (jittable) except the file reader.
"""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

_log = logging.getLogger(__name__)

IDF_FILE = "bm25_idf.npy"  # per-bucket idf, float32 (N,)
PARAMS_FILE = "bm25_idf.json"  # how it was computed (checked against the model config)
FORMAT = "gca_jax.bm25_idf/1"
# Multipliers of the 32-bit integer hash (xor-shift-multiply mixing).
_MIX_1, _MIX_2 = 0x9E3779B1, 0x85EBCA6B


def hash_name(buckets: int, vocab_size: int) -> str:
    """The term hash used for ``buckets`` buckets: "identity" (exact) or "mix32"."""
    return "identity" if buckets >= vocab_size else "mix32"


def bucket_ids(ids, *, buckets: int, vocab_size: int):
    """Term bucket of each token id (numpy or jax array, ids >= 0), int32, same shape.

    Identity when ``buckets >= vocab_size``; else ``mix32(id) % buckets`` where mix32 is
    x *= 0x9E3779B1; x ^= x >> 16; x *= 0x85EBCA6B; x ^= x >> 13 in uint32 arithmetic.
    """
    xp = jnp if isinstance(ids, jax.Array) else np
    if hash_name(buckets, vocab_size) == "identity":
        return ids.astype(xp.int32)
    x = ids.astype(xp.uint32) * xp.uint32(_MIX_1)
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(_MIX_2)
    x = x ^ (x >> xp.uint32(13))
    return (x % xp.uint32(buckets)).astype(xp.int32)


def is_term(tokens, pad_id: int):
    """True where a token is a term (not padding: negative ids or ``pad_id``)."""
    return (tokens >= 0) & (tokens != pad_id)


def term_frequencies(
    tokens_BxCxS: jax.Array, *, buckets: int, vocab_size: int, pad_id: int
) -> tuple[jax.Array, jax.Array]:
    """Per chunk: term counts (B, C, N) float32 over the N buckets, and lengths (B, C)."""
    b, c, s = tokens_BxCxS.shape
    valid = is_term(tokens_BxCxS, pad_id)
    h = bucket_ids(jnp.where(valid, tokens_BxCxS, 0), buckets=buckets, vocab_size=vocab_size)
    rows_B = jnp.arange(b).reshape(b, 1, 1)
    cols_C = jnp.arange(c).reshape(1, c, 1)
    tf = jnp.zeros((b, c, buckets), jnp.float32).at[rows_B, cols_C, h].add(valid)
    return tf, jnp.sum(valid, axis=-1).astype(jnp.float32)


def document_vectors(
    tokens_BxCxS: jax.Array,
    *,
    buckets: int,
    vocab_size: int,
    pad_id: int,
    k1: float,
    b: float,
    avg_len: float,
) -> jax.Array:
    """(B, C, N) float32: tf (k1 + 1) / (tf + k1 (1 - b + b len / avg_len)); 0 where tf = 0."""
    tf, length_BxC = term_frequencies(
        tokens_BxCxS, buckets=buckets, vocab_size=vocab_size, pad_id=pad_id
    )
    norm_BxCx1 = (k1 * (1.0 - b + b * length_BxC / avg_len))[..., None]
    return jnp.where(tf > 0, tf * (k1 + 1.0) / jnp.maximum(tf + norm_BxCx1, 1e-30), 0.0)


def query_vectors(doc_BxCxN: jax.Array, idf_N: jax.Array) -> jax.Array:
    """(B, C, N) idf-weighted indicator of each chunk's distinct terms, from its document vector."""
    return jnp.where(doc_BxCxN > 0, idf_N.astype(jnp.float32), 0.0)


def dot_scores(query_BxCxN: jax.Array, doc_BxExN: jax.Array) -> jax.Array:
    """s[b, c, e] = q_c . d_e in float32 at full precision (BM25 when built as above)."""
    return jnp.einsum(
        "BCN,BEN->BCE",
        query_BxCxN.astype(jnp.float32),
        doc_BxExN.astype(jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )


def idf_from_counts(doc_freq_N, num_docs: int):
    """Standard BM25 idf log(1 + (N - n + 0.5) / (n + 0.5)), float32 (numpy)."""
    n = np.asarray(doc_freq_N, np.float64)
    return np.log1p((num_docs - n + 0.5) / (n + 0.5)).astype(np.float32)


def read_idf(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Reads ``bm25_idf.npy`` and the ``bm25_idf.json`` beside it: (idf (N,) float32, params).

    Raises:
      FileNotFoundError: either file is missing; the message gives the prepare command.
      ValueError: a damaged file (wrong format, shape or non-finite values).
    """
    path = os.fspath(path)
    params_path = os.path.join(os.path.dirname(path), PARAMS_FILE)
    for p in (path, params_path):
        if not os.path.isfile(p):
            corpus = os.path.dirname(path) or "CORPUS_DIR"
            raise FileNotFoundError(
                f"BM25 idf file {p} not found (model.rpt.idf_path={path!r}); compute it once "
                f"over the training corpus with `python -m train.prepare --bm25-idf {corpus} "
                "--chunk_len S` (S = model.retrieval.chunk_len), or set model.rpt.idf_path=null "
                "for uniform idf (tests, --random_init)"
            )
    with open(params_path) as f:
        params = json.load(f)
    idf = np.load(path)
    if params.get("format") != FORMAT:
        raise ValueError(f"{params_path}: format={params.get('format')!r} must be {FORMAT!r}")
    if idf.shape != (params["buckets"],) or not np.all(np.isfinite(idf)):
        raise ValueError(
            f"{path}: idf of shape {idf.shape} must be ({params['buckets']},) and finite"
        )
    return idf.astype(np.float32), params
