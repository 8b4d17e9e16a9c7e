"""Fixtures for the data tests: generated documents, a tiny trained BPE, small prepared corpora."""

import pytest
from datatest_helpers import make_docs, write_docs

from gca_jax.data import prepare, tokenizer


@pytest.fixture(scope="session")
def tiny_bpe_path(tmp_path_factory) -> str:
    """A byte-level BPE with 400 ids trained on the generated documents."""
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tokenizer.train_bpe(make_docs(60, seed=1), vocab_size=400, out_path=path)
    return str(path)


@pytest.fixture(scope="session")
def docs() -> list[str]:
    """Forty generated documents."""
    return make_docs(40)


@pytest.fixture(scope="session")
def byte_corpus(tmp_path_factory, docs) -> str:
    """The forty documents prepared with the byte tokenizer, 10 documents per shard."""
    root = tmp_path_factory.mktemp("byte_corpus")
    write_docs(root / "in", docs)
    out = str(root / "corpus")
    prepare.prepare_corpus([str(root / "in")], out, format="text", files_per_shard=10)
    return out
