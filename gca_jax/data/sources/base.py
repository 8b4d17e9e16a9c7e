"""What every corpus source shares: the shard task, the planning options and the source record."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator

# Options only some formats use, with the value meaning "not given". A format that does not list
# one in `Source.options` rejects it when given, rather than silently ignoring it.
OPTIONAL = {"text_field": None, "holdout_every": 0, "data_dir": None, "manual_dir": None}


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One unit of preparation work; its documents become one output shard.

    Its fields are stored in the manifest (`describe`), so changing them makes every corpus
    prepared before look prepared "from other inputs" on resume.

    Attributes:
        format: the source format, a key of `sources.SOURCES`.
        paths: input files (or, for tfds, the dataset name).
        text_field: record field holding the text (jsonl/proofpile/parquet/tfds).
        start: first record (tfds only).
        stop: one past the last record (tfds only).
        data_dir: tfds data_dir (tfds only).
        split: split name (tfds, builtin).
    """

    format: str
    paths: tuple[str, ...]
    text_field: str = "text"
    start: int = 0
    stop: int = 0
    data_dir: str = ""
    split: str = ""

    def describe(self) -> dict:
        """JSON-able description, stored in the manifest to detect a changed plan on resume."""
        return dataclasses.asdict(self) | {"paths": list(self.paths)}


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """The options of `prepare_corpus` that planning reads (see `sources.plan_shards`).

    Attributes:
        split: split to read; kept in the manifest.
        text_field: record field with the text; the format's default when None.
        files_per_shard: documents per shard for one-file-per-document formats.
        records_per_shard: records per shard for tfds.
        data_dir: tfds data_dir.
        holdout_every: `text` only: every k-th file is "validation", the rest "train".
        manual_dir: `tfds` only: build `local_pg19`/`local_proofpile` from this local copy first.
    """

    split: str = "train"
    text_field: str | None = None
    files_per_shard: int = 64
    records_per_shard: int = 10_000
    data_dir: str | None = None
    holdout_every: int = 0
    manual_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """One source format: how to plan its inputs into shard tasks and read a task's documents.

    Attributes:
        name: the format name (`--format`).
        inputs: what the positional inputs are, for the CLI help and docs/data.md.
        notes: one line on layout and options, for the CLI help and docs/data.md.
        plan: `plan(inputs, options) -> [ShardTask]`; validates everything it can, raising
            `ValueError`, before any document is read.
        read: `read(task, skipped) -> texts`; counts per-document problems in `skipped`.
        options: the keys of `OPTIONAL` this format uses.
    """

    name: str
    inputs: str
    notes: str
    plan: Callable[[list[str], PlanOptions], list[ShardTask]]
    read: Callable[[ShardTask, collections.Counter], Iterator[str]]
    options: frozenset[str] = frozenset()

    def __post_init__(self):
        unknown = self.options - OPTIONAL.keys()
        assert not unknown, f"source {self.name!r}: {unknown=} are not in {tuple(OPTIONAL)}"
