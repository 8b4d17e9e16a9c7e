"""BM25 as a dot product equals a plain BM25 written with loops (gca_jax/modeling/bm25.py)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.modeling import bm25

V, PAD = 40, 39


def _plain_bm25(query, doc, idf, *, k1, b, avg_len):
    """Okapi BM25 of one query bag against one document bag, over distinct query terms."""
    doc = [t for t in doc if t >= 0 and t != PAD]
    score = 0.0
    for term in {t for t in query if t >= 0 and t != PAD}:
        tf = doc.count(term)
        if tf:
            score += idf[term] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avg_len))
    return score


def _bags(seed, c, s):
    """C random token bags of S ids, with repeats (small vocabulary) and some padding."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 12, (1, c, s))
    tokens[0, 1, -3:] = -1  # a padded tail (negative ids)
    tokens[0, 2, :4] = PAD  # left padding with pad_id
    tokens[0, 3, :] = PAD  # an all-padding chunk: scores 0 both ways
    return tokens.astype(np.int32)


def _dot_scores(tokens, idf, buckets, **kw):
    doc = bm25.document_vectors(
        jnp.asarray(tokens), buckets=buckets, vocab_size=V, pad_id=PAD, **kw
    )
    return np.asarray(bm25.dot_scores(bm25.query_vectors(doc, jnp.asarray(idf)), doc))[0]


@pytest.mark.parametrize("k1, b", [(1.2, 0.75), (0.0, 0.5), (2.0, 1.0)])
def test_identity_hash_scores_equal_plain_bm25(k1, b):
    c, s, avg_len = 8, 10, 9.3
    tokens = _bags(0, c, s)
    idf = np.random.default_rng(1).uniform(0.1, 3.0, V).astype(np.float32)
    got = _dot_scores(tokens, idf, V, k1=k1, b=b, avg_len=avg_len)
    bags = tokens[0].tolist()
    want = [[_plain_bm25(q, d, idf, k1=k1, b=b, avg_len=avg_len) for d in bags] for q in bags]
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[3], 0.0)
    np.testing.assert_array_equal(got[:, 3], 0.0)


def test_hashed_scores_are_bm25_over_the_bucketed_tokens():
    buckets, c, s = 5, 6, 12
    tokens = _bags(2, c, s)
    idf = np.random.default_rng(3).uniform(0.1, 3.0, buckets).astype(np.float32)
    got = _dot_scores(tokens, idf, buckets, k1=1.2, b=0.75, avg_len=float(s))
    keep = (tokens >= 0) & (tokens != PAD)
    hashed = np.where(keep, bm25.bucket_ids(tokens, buckets=buckets, vocab_size=V), -1)
    bags = hashed[0].tolist()
    want = [[_plain_bm25(q, d, idf, k1=1.2, b=0.75, avg_len=float(s)) for d in bags] for q in bags]
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)


def test_bucket_hash_is_the_same_in_numpy_and_jax_and_identity_when_wide_enough():
    ids = np.arange(0, 50_000, 7, dtype=np.int32)
    np_b = bm25.bucket_ids(ids, buckets=1000, vocab_size=50_265)
    jax_b = np.asarray(bm25.bucket_ids(jnp.asarray(ids), buckets=1000, vocab_size=50_265))
    np.testing.assert_array_equal(np_b, jax_b)
    assert np_b.min() >= 0 and np_b.max() < 1000 and len(np.unique(np_b)) > 900
    np.testing.assert_array_equal(bm25.bucket_ids(ids, buckets=50_265, vocab_size=50_265), ids)
    assert bm25.hash_name(50_265, 50_265) == "identity" and bm25.hash_name(8, 9) == "mix32"


def test_idf_formula():
    idf = bm25.idf_from_counts(np.array([0, 1, 10]), 10)
    want = [math.log(1 + (10 - n + 0.5) / (n + 0.5)) for n in (0, 1, 10)]
    np.testing.assert_allclose(idf, want, rtol=1e-6)
