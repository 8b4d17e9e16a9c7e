"""Fixtures for training tests: the tiny config (shrunk further) and small prepared corpora."""

import os

import pytest

from gca_jax.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tiny.yaml")

# Smaller than tiny.yaml's demo shape: fast to compile and run on 2 cores.
FAST = [
    "data.seq_len=120",
    "data.batch_size=8",
    "train.steps=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.save_every=4",
    "train.eval_every=0",
]


def tiny_config(*overrides: str):
    """configs/tiny.yaml with the FAST overrides and then ``overrides``."""
    return load_config(TINY, FAST + list(overrides))


@pytest.fixture(scope="session")
def repetitive_corpus(tmp_path_factory) -> str:
    """A byte-level corpus of one short sentence repeated: loss must fall fast on it."""
    from gca_jax.data import prepare_corpus

    root = tmp_path_factory.mktemp("repetitive")
    text = root / "doc.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    out = root / "corpus"
    prepare_corpus([str(text)], out, format="text", tokenizer="bytes")
    return str(out)
