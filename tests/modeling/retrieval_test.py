import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gca_jax.modeling.retrieval import (
    causal_mask,
    lag_one_chunk,
    retrieval_scores,
    safe_masked_softmax,
    select_rows,
)
from kernels.gca import gca_attention


def _rows(seed, b, c, e, k, gumbel):
    key = jax.random.key(seed)
    scores = jax.random.normal(key, (b, c, e))
    valid = causal_mask(jnp.arange(e - c, e), e)  # the last C of E global chunk ids
    gkey = jax.random.fold_in(key, 1) if gumbel else None
    return scores, valid, select_rows(scores, valid, top_k=k, gumbel_key=gkey)


@given(
    c=st.sampled_from([1, 2, 5, 9]),
    k=st.sampled_from([1, 3, 8]),
    extra=st.sampled_from([0, 3]),
    gumbel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_query_chunk_only_sees_chunks_at_least_two_back(c, k, extra, gumbel, seed):
    e = c + extra  # memory may hold chunks from earlier segments
    _, _, rows = _rows(seed, 2, c, e, k, gumbel)
    ret = lag_one_chunk(rows)
    idx, w = np.asarray(ret.idx), np.asarray(ret.w)
    assert idx.shape == (2, c, min(k, e))
    global_ids = np.arange(e - c, e)
    for ci in range(c):
        used = idx[:, ci][w[:, ci] > 0]
        assert np.all(used <= global_ids[ci] - 2)
        assert np.all(w[:, ci] >= 0)
    np.testing.assert_array_equal(w[:, 0], 0.0)  # chunk 0 of a sequence gets nothing
    if extra == 0 and c > 1:
        np.testing.assert_array_equal(w[:, 1], 0.0)
    sums = w.sum(-1)
    assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))


@given(seed=st.integers(0, 2**16), k=st.integers(1, 6))
def test_gumbel_noise_changes_selection_only(seed, k):
    scores, valid, noisy = _rows(seed, 3, 8, 8, k, gumbel=True)
    picked = jnp.take_along_axis(scores, noisy.idx, axis=-1)
    picked_valid = jnp.take_along_axis(jnp.broadcast_to(valid[None], scores.shape), noisy.idx, -1)
    expected = jax.nn.softmax(jnp.where(picked_valid, picked, -jnp.inf), axis=-1)
    expected = jnp.nan_to_num(expected)
    np.testing.assert_allclose(noisy.w, expected, rtol=1e-6, atol=1e-7)


def test_gumbel_sampling_differs_from_plain_top_k():
    _, _, plain = _rows(0, 4, 16, 16, 3, gumbel=False)
    _, _, noisy = _rows(0, 4, 16, 16, 3, gumbel=True)
    assert not np.array_equal(np.sort(plain.idx, -1), np.sort(noisy.idx, -1))


def test_masked_softmax_has_no_nan_in_values_or_gradients():
    s = jnp.array([[1.0, 2.0, -jnp.inf], [0.5, 0.1, 0.2], [3.0, 1.0, 2.0]])
    valid = jnp.array([[True, True, False], [False, False, False], [True, False, True]])
    w = safe_masked_softmax(s, valid)
    np.testing.assert_array_equal(w[1], 0.0)
    two = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(w[0], [two[0], two[1], 0.0], rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(safe_masked_softmax(x, valid) * jnp.arange(3.0)[None]))(s)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1], 0.0)


def test_scores_are_scaled_by_sqrt_hidden():
    q = jax.random.normal(jax.random.key(0), (1, 2, 16))
    lm = jax.random.normal(jax.random.key(1), (1, 3, 16))
    np.testing.assert_allclose(
        retrieval_scores(q, lm), jnp.einsum("bcd,bed->bce", q, lm) / 4.0, rtol=1e-6
    )


def test_null_slot_acts_as_softmax_off_by_one():
    """A zero key and zero value slot turns each chunk's softmax into e^s / (1 + sum e^s)."""
    key = jax.random.split(jax.random.key(0), 3)
    b, c, p, h, d, e = 1, 2, 4, 2, 8, 3
    q = jax.random.normal(key[0], (b, c, p, h, d))
    keys = jax.random.normal(key[1], (b, e, 5, h, d)).at[:, :, -1].set(0.0)
    values = jax.random.normal(key[2], (b, e, 5, h, d)).at[:, :, -1].set(0.0)
    idx = jnp.array([[[0, 2], [1, 1]]], jnp.int32)
    w = jnp.array([[[0.3, 0.7], [0.5, 0.5]]], jnp.float32)
    out = gca_attention(q, keys, values, idx, w, scale=0.5, backend="xla")
    expected = np.zeros(out.shape)
    for ci in range(c):
        for slot in range(2):
            kk, vv = keys[0, idx[0, ci, slot], :4], values[0, idx[0, ci, slot], :4]
            s = jnp.einsum("phd,jhd->phj", q[0, ci], kk) * 0.5
            p_ = jnp.exp(s) / (1.0 + jnp.exp(s).sum(-1, keepdims=True))
            expected[0, ci] += w[0, ci, slot] * np.asarray(jnp.einsum("phj,jhd->phd", p_, vv))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
