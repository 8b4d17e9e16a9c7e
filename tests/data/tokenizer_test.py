import json

import numpy as np
import pytest
from datatest_helpers import make_docs
from hypothesis import given
from hypothesis import strategies as st

from gca_jax.data import tokenizer


@given(st.text())
def test_bytes_round_trip(text):
    tok = tokenizer.ByteTokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    np.testing.assert_array_equal(tok.encode_array(text), np.asarray(ids, np.int32))


def test_bytes_fixed_ids():
    tok = tokenizer.load_tokenizer("bytes")
    assert (tok.eot_id, tok.pad_id, tok.landmark_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.identity["kind"] == "bytes"
    assert tok.decode([104, 105, 256, 258, 257]) == "hi"  # Specials are dropped.


def test_trained_bpe_round_trip_and_ids(tiny_bpe_path):
    tok = tokenizer.load_tokenizer(tiny_bpe_path)
    assert tok.vocab_size == 400
    assert tok.eot_id == 0
    # The eight extras are appended in the original order; pad is the first, landmark the last.
    assert (tok.pad_id, tok.landmark_id) == (392, 399)
    for text in make_docs(5, seed=7) + ["unseen wörds ✓ 123"]:
        ids = tok.encode(text)
        assert max(ids) < tok.vocab_size and tok.eot_id not in ids
        assert tok.decode(ids) == text
        assert tok.decode(ids + [tok.eot_id, tok.landmark_id]) == text
    assert isinstance(tok, tokenizer.Tokenizer)


def _gpt2_like_file(path, *, with_extras: bool):
    """A BPE tokenizer.json with GPT-2's layout: 50256 ordinary ids, then <|endoftext|>."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for i in range(len(vocab), 50256):
        vocab[f"filler{i}"] = i
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (list(tokenizer.GPT2_EXTRA_TOKENS) if with_extras else [])
    hf.add_special_tokens([AddedToken(s, special=True) for s in specials])
    hf.save(str(path))


@pytest.mark.parametrize("with_extras", [False, True])
def test_gpt2_layout_gets_spec_ids(tmp_path, with_extras):
    path = tmp_path / "tokenizer.json"
    _gpt2_like_file(path, with_extras=with_extras)
    tok = tokenizer.load_tokenizer(str(path))
    assert (tok.eot_id, tok.pad_id, tok.landmark_id, tok.vocab_size) == (50256, 50257, 50264, 50265)
    assert tok.decode(tok.encode("Hello, world")) == "Hello, world"
    assert json.dumps(tok.identity)  # JSON-able.


def test_load_tokenizer_rejects_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="must be 'bytes' or an existing"):
        tokenizer.load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="without tokenizer.json"):
        tokenizer.load_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        tokenizer.load_tokenizer(bad)
    with pytest.raises(ValueError, match="vocab_size=10 must be >= 300"):
        tokenizer.train_bpe(["a b"], vocab_size=10, out_path=tmp_path / "t.json")


def test_load_from_corpus_directory(tmp_path, tiny_bpe_path):
    import shutil

    shutil.copy(tiny_bpe_path, tmp_path / "tokenizer.json")
    assert (
        tokenizer.load_tokenizer(tmp_path).identity
        == tokenizer.load_tokenizer(tiny_bpe_path).identity
    )
