import pytest

from gca_jax.data import TokenStream, builtin_documents, load_tokenizer, prepare_builtin_corpus


def test_builtin_splits_are_disjoint_real_text():
    train, val = builtin_documents("train"), builtin_documents("validation")
    assert len(train) > 50 and len(val) > 5
    assert not set(train) & set(val)
    assert sum(map(len, train)) > 300_000
    assert "the" in train[0]


def test_prepare_builtin_corpus_and_rerun(tmp_path):
    manifest = prepare_builtin_corpus(tmp_path / "c")
    assert manifest["num_documents"] == len(builtin_documents("train"))
    again = prepare_builtin_corpus(tmp_path / "c")
    assert again["shards_reused"] == 1 and again["num_tokens"] == manifest["num_tokens"]
    doc = TokenStream(tmp_path / "c").document(0)
    assert load_tokenizer("bytes").decode(doc) == builtin_documents("train")[0]


def test_builtin_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split='test' must be one of"):
        prepare_builtin_corpus(tmp_path / "c", split="test")
    assert not (tmp_path / "c").exists()  # Checked while planning, before anything is written.
    with pytest.raises(ValueError, match="split='test' must be one of"):
        builtin_documents("test")
