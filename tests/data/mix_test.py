import numpy as np
import pytest

from gca_jax.data import load_tokenizer, make_train_dataset
from gca_jax.data.mix import make_niah_mix_dataset


def _batches(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_mix_proportions_determinism_and_resume(byte_corpus):
    tok = load_tokenizer("bytes")
    kw = dict(seq_len=63 * 16, batch_size=8, seed=2, chunk_size=63)
    probs = {"lm": 0.5, "single": 0.25, "multihop": 0.25}
    a = _batches(make_niah_mix_dataset(byte_corpus, tok, probabilities=probs, **kw), 4)
    lm_rows = sum(int(b["loss_mask"].all(axis=1).sum()) for b in a)
    assert 6 <= lm_rows <= 26  # About half of 32 samples are plain LM windows.
    for b in a:
        assert b["tokens"].shape == (8, 63 * 16) and b["loss_mask"].dtype == np.bool_
        niah_rows = ~b["loss_mask"].all(axis=1)
        assert (b["tokens"][niah_rows][:, -1] == tok.pad_id).all()
        assert not b["answer_mask"][~niah_rows].any()
        for row, loss_mask in zip(b["answer_mask"][niah_rows], b["loss_mask"][niah_rows]):
            # The answer is the last tokens the loss covers: right before the pad tail.
            last = np.flatnonzero(loss_mask)[-1]
            ids = np.flatnonzero(row)
            assert len(ids) >= 5 and ids[-1] == last and (np.diff(ids) == 1).all()
    # LM rows equal the plain training windows of the same index.
    plain = _batches(make_train_dataset(byte_corpus, seq_len=63 * 16, batch_size=8, seed=2), 1)
    rows = a[0]["loss_mask"].all(axis=1)
    np.testing.assert_array_equal(a[0]["tokens"][rows], plain[0]["tokens"][rows])
    it = iter(make_niah_mix_dataset(byte_corpus, tok, probabilities=probs, **kw))
    next(it)
    state = it.get_state()
    again = iter(make_niah_mix_dataset(byte_corpus, tok, probabilities=probs, **kw))
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["tokens"], a[1]["tokens"])


def test_mix_rejects_bad_probabilities(byte_corpus):
    tok = load_tokenizer("bytes")
    kw = dict(seq_len=630, batch_size=2, seed=0, chunk_size=63)
    with pytest.raises(ValueError, match="unknown kinds \\['hop'\\]"):
        make_niah_mix_dataset(byte_corpus, tok, probabilities={"hop": 1.0}, **kw)
    with pytest.raises(ValueError, match="sum to 1"):
        make_niah_mix_dataset(byte_corpus, tok, probabilities={"lm": 0.5}, **kw)
