"""`builtin`: the embedded default corpus, prose shipped with CPython, for offline demos.

`pydoc_data.topics.topics` holds the text of the Python reference manual's topics that `help()`
shows (79 topics, 78 distinct texts, about 0.5 MB in CPython 3.12). Distinct texts are taken in
topic-name order; every tenth one (positions 0, 10, 20, ...) forms the validation split, the rest
the train split. `gca_jax.data.prepare.prepare_builtin_corpus` prepares it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

SPLITS = ("train", "validation")


def _check_split(split: str) -> None:
    """Raise for a split the embedded corpus does not have."""
    if split not in SPLITS:
        raise ValueError(f"builtin corpus {split=} must be one of {SPLITS}")


def builtin_documents(split: str = "train") -> list[str]:
    """Documents of the embedded corpus.

    Args:
        split: "train" or "validation".

    Returns:
        The document texts, in a fixed order.

    Raises:
        ValueError: for an unknown split.
    """
    _check_split(split)
    from pydoc_data import topics  # Imported lazily: 0.5 MB of strings.

    texts = list(dict.fromkeys(topics.topics[n] for n in sorted(topics.topics)))  # "if" == "else".
    return [t for i, t in enumerate(texts) if (i % 10 == 0) == (split == "validation")]


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """The whole split is one task; the corpus comes from Python, so there are no inputs."""
    if inputs:
        raise ValueError(f"format 'builtin' takes no inputs, got {inputs=}")
    _check_split(options.split)
    return [ShardTask("builtin", ("pydoc_data.topics",), split=options.split)]


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The documents of the task's split."""
    del skipped  # Python's own text has nothing to skip.
    yield from builtin_documents(task.split)


SOURCE = Source(
    name="builtin",
    inputs="none",
    notes="the `pydoc_data` topics shipped with CPython (§3.1); `--split` train or validation",
    plan=_plan,
    read=_read,
)
