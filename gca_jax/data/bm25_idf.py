"""BM25 idf of a prepared corpus, for the fixed retriever of RPT (docs/data.md, "BM25 idf").

``python -m train.prepare --bm25-idf CORPUS_DIR --chunk_len S [--buckets N]`` writes
``CORPUS_DIR/bm25_idf.npy`` (float32 (N,), the idf of each term bucket) and
``CORPUS_DIR/bm25_idf.json`` (how it was computed; the model checks it against its config).

The documents of BM25 are the chunks [i S, (i + 1) S) of the corpus' token stream (documents
in manifest order, each with its EOT, as training windows read it; the last partial chunk is
dropped): N_docs chunks, n_h of them holding a token of bucket h, give
idf[h] = log(1 + (N_docs - n_h + 0.5) / (n_h + 0.5)). The terms and buckets are those of
``gca_jax.modeling.bm25`` (identity when N >= the vocabulary, else a fixed hash). Pure numpy,
deterministic, one pass over the stream in blocks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from gca_jax.data import manifest as manifest_lib
from gca_jax.data.pipeline import TokenStream
from gca_jax.modeling import bm25

logger = logging.getLogger(__name__)


def _chunk_counts(chunks_NxS: np.ndarray, *, buckets: int, vocab_size: int, pad_id: int):
    """(document frequency per bucket (buckets,) int64, number of terms) of a block of chunks."""
    valid = bm25.is_term(chunks_NxS, pad_id)
    h = bm25.bucket_ids(np.where(valid, chunks_NxS, 0), buckets=buckets, vocab_size=vocab_size)
    h = np.sort(np.where(valid, h, buckets), axis=1)  # padding sorts last, as bucket `buckets`
    first = np.ones_like(h, dtype=bool)
    first[:, 1:] = h[:, 1:] != h[:, :-1]  # one count per distinct bucket of a chunk
    df = np.bincount(h[first], minlength=buckets + 1)[:buckets]
    return df.astype(np.int64), int(valid.sum())


def compute_idf(
    corpus_dir: str | os.PathLike,
    *,
    chunk_len: int,
    buckets: int | None = None,
    block_chunks: int = 1 << 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Computes and writes the BM25 idf of a prepared corpus; returns the parameters written.

    Args:
      corpus_dir: a corpus written by ``train.prepare`` (its training split).
      chunk_len: S, the model's ``retrieval.chunk_len``.
      buckets: term buckets; None = the tokenizer's vocabulary size (identity: exact BM25).
      block_chunks: chunks read per block (memory: block_chunks * S ids).
      progress: called with (chunks done, chunks in all) after each block.

    Raises:
      ValueError: no corpus there, ``chunk_len`` or ``buckets`` < 1, or fewer than S tokens.
    """
    corpus_dir = os.fspath(corpus_dir)
    if chunk_len < 1 or (buckets is not None and buckets < 1):
        raise ValueError(f"{chunk_len=} and {buckets=} must be >= 1")
    stream = TokenStream(corpus_dir)
    tok = stream.manifest["tokenizer"]
    vocab_size, pad_id = int(tok["vocab_size"]), int(tok["pad_id"])
    buckets = buckets or vocab_size
    num_chunks = stream.num_tokens // chunk_len
    if num_chunks == 0:
        raise ValueError(f"corpus {corpus_dir} has {stream.num_tokens} tokens < {chunk_len=}")
    df, terms = np.zeros((buckets,), np.int64), 0
    for c0 in range(0, num_chunks, block_chunks):
        n = min(block_chunks, num_chunks - c0)
        chunks = stream.read(c0 * chunk_len, n * chunk_len).reshape(n, chunk_len)
        block_df, block_terms = _chunk_counts(
            chunks, buckets=buckets, vocab_size=vocab_size, pad_id=pad_id
        )
        df += block_df
        terms += block_terms
        if progress is not None:
            progress(c0 + n, num_chunks)
    params = {
        "format": bm25.FORMAT,
        "chunk_len": chunk_len,
        "buckets": buckets,
        "hash": bm25.hash_name(buckets, vocab_size),
        "vocab_size": vocab_size,
        "pad_id": pad_id,
        "num_chunks": num_chunks,
        "avg_len": terms / num_chunks,
        "tokenizer": tok,
    }
    path = os.path.join(corpus_dir, bm25.IDF_FILE)
    tmp = path + ".tmp.npy"
    np.save(tmp, bm25.idf_from_counts(df, num_chunks))
    os.replace(tmp, path)
    manifest_lib.write_json_atomic(os.path.join(corpus_dir, bm25.PARAMS_FILE), params)
    logger.info("BM25 idf of %d chunks over %d buckets -> %s", num_chunks, buckets, path)
    return params
