"""Corpus sources behind one registry: format name -> how to plan its inputs and read documents.

Each format is one module here defining `SOURCE` (a `base.Source`); `SOURCES` below lists them,
and `train.prepare --format`, its help and docs/data.md's table (checked by a test) come from it:

- `text`: plain files, one document each (`text.py`).
- `pg19`: the PG-19 directory layout (`pg19.py`).
- `jsonl`: one document per line of `*.jsonl[.gz]` (`jsonl.py`).
- `proofpile`: proof-pile's arXiv documents (`proofpile.py`, which holds the one arXiv filter).
- `parquet`: Hugging Face parquet files (`parquet.py`).
- `tfds`: a tensorflow-datasets dataset prepared in a data_dir (`tfds.py`).
- `builtin`: the text embedded in Python itself (`builtin.py`); no inputs.
- `rdata`: character vectors in R data files, e.g. Jane Austen's novels (`rdata.py`, read with
  `rserial.py`).
- `kjv`: the King James Bible of Debian's `bible-kjv-text` (`kjv.py`).
- `perldoc`, `linuxdoc`, `pythondoc`: Debian's documentation packages (`packaged.py` holds what
  they share).

The last five split their documents by name (`splits.py`).

To add a format, write its module and add its `SOURCE` to `_ALL` (and a row to docs/data.md).

Planning happens before any work and raises `ValueError` for unknown formats, missing paths, an
option the format does not use, and whatever the format checks itself (e.g. parquet files
without the text column). Per-document problems (undecodable bytes, empty text, bad JSON lines)
are counted in `skipped` and never stop the run.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Iterator

from gca_jax.data.sources import (
    builtin,
    jsonl,
    kjv,
    linuxdoc,
    parquet,
    perldoc,
    pg19,
    proofpile,
    pythondoc,
    rdata,
    text,
    tfds,
)
from gca_jax.data.sources.base import OPTIONAL, PlanOptions, ShardTask, Source

_ALL = (
    text.SOURCE,
    pg19.SOURCE,
    jsonl.SOURCE,
    proofpile.SOURCE,
    parquet.SOURCE,
    tfds.SOURCE,
    builtin.SOURCE,
    rdata.SOURCE,
    kjv.SOURCE,
    perldoc.SOURCE,
    linuxdoc.SOURCE,
    pythondoc.SOURCE,
)
SOURCES: types.MappingProxyType[str, Source] = types.MappingProxyType({s.name: s for s in _ALL})
FORMATS = tuple(SOURCES)
assert len(SOURCES) == len(_ALL), f"two sources share a name: {[s.name for s in _ALL]}"

__all__ = [
    "FORMATS",
    "SOURCES",
    "PlanOptions",
    "ShardTask",
    "Source",
    "get_source",
    "iter_documents",
    "plan_shards",
]


def get_source(format: str) -> Source:
    """The registered source of `format`.

    Raises:
        ValueError: for an unknown format, listing the known ones.
    """
    if format not in SOURCES:
        raise ValueError(f"{format=} is unknown; choose one of {FORMATS}")
    return SOURCES[format]


def _check_options(source: Source, options: PlanOptions) -> None:
    """Reject an optional setting that `source` would silently ignore."""
    for name, unset in OPTIONAL.items():
        value = getattr(options, name)
        if value == unset or name in source.options:
            continue
        users = tuple(s.name for s in SOURCES.values() if name in s.options)
        need = f"format={users[0]!r}" if len(users) == 1 else f"format in {users}"
        raise ValueError(f"{name}={value!r} needs {need}, got format={source.name!r}")


def plan_shards(inputs: list[str], *, format: str, **options) -> list[ShardTask]:
    """Validate the inputs and split the work into shard tasks, before anything is tokenized.

    Args:
        inputs: input paths (files or directories); for `tfds`, one dataset name; for `builtin`,
            none.
        format: one of `FORMATS`.
        **options: the fields of `PlanOptions` (split, text_field, files_per_shard,
            records_per_shard, data_dir, holdout_every, manual_dir).

    Returns:
        The shard tasks, in a deterministic order.

    Raises:
        ValueError: unknown format, an option the format does not use, missing input, nothing
            to read, or a format-specific problem (e.g. a missing parquet column).
    """
    source = get_source(format)
    plan_options = PlanOptions(**options)
    _check_options(source, plan_options)
    return source.plan(list(inputs), plan_options)


def iter_documents(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """Yield the document texts of one shard task, counting skipped inputs in `skipped`."""
    return SOURCES[task.format].read(task, skipped)
