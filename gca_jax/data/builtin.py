"""The embedded default corpus: prose shipped with CPython, so `make demo` needs no download.

`pydoc_data.topics.topics` holds the text of the Python reference manual's topics that `help()`
shows (79 topics, 78 distinct texts, about 0.5 MB in CPython 3.12). Distinct texts are taken in
topic-name order; every tenth one (positions 0, 10, 20, ...) forms the validation split, the rest
the train split.
"""

from __future__ import annotations

import os

SPLITS = ("train", "validation")


def builtin_documents(split: str = "train") -> list[str]:
    """Documents of the embedded corpus.

    Args:
        split: "train" or "validation".

    Returns:
        The document texts, in a fixed order.

    Raises:
        ValueError: for an unknown split.
    """
    from pydoc_data import topics  # Imported lazily: 0.5 MB of strings.

    if split not in SPLITS:
        raise ValueError(f"builtin corpus {split=} must be one of {SPLITS}")
    texts = list(dict.fromkeys(topics.topics[n] for n in sorted(topics.topics)))  # "if" == "else".
    return [t for i, t in enumerate(texts) if (i % 10 == 0) == (split == "validation")]


def prepare_builtin_corpus(
    out_dir: str | os.PathLike, tokenizer: str = "bytes", *, split: str = "train"
) -> dict:
    """Prepare the embedded corpus into `out_dir` (resumable, like any corpus).

    Args:
        out_dir: corpus directory to write.
        tokenizer: "bytes" or a tokenizer.json path.
        split: "train" or "validation".

    Returns:
        The manifest (see `prepare_corpus`).
    """
    from gca_jax.data.prepare import prepare_corpus

    builtin_documents(split)  # Validates the split before anything is written.
    return prepare_corpus([], out_dir, format="builtin", tokenizer=tokenizer, split=split)
