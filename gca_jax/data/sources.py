"""Corpus sources: turn local inputs into a plan of shard tasks, and a task into document texts.

Formats (all offline):

- `text`: a file, or a directory searched recursively; every file is one document. With
  `holdout_every=k`, files at sorted positions 0, k, 2k, ... form the "validation" split and the
  rest the "train" split (for corpora without splits, e.g. the Python docs).
- `pg19`: the PG-19 layout, `<root>/{train,validation,test}/<id>.txt`; `split` picks the directory.
- `jsonl`: `*.jsonl` / `*.jsonl.gz` files (or a directory of them); one document per line, read
  from `text_field`.
- `proofpile`: proof-pile `*.jsonl.gz`, keeping only lines with `meta.config == "arxiv"` (spec
  §5.1); a `split` subdirectory (train/dev/test) is used when present.
- `parquet`: Hugging Face parquet files (pg19 `text`, xsum `document`, cnn_dailymail `article`).
- `tfds`: a tensorflow-datasets dataset already prepared in a data_dir (see `tfds_source.py`).
- `builtin`: the text embedded in Python itself (see `builtin.py`); inputs are ignored.

Planning happens before any work and raises `ValueError` for missing paths, unknown formats and
parquet files without the text column. Per-document problems (undecodable bytes, empty text, bad
JSON lines) are counted in `skipped` and never stop the run.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import logging
import os
import re
from collections.abc import Iterator

logger = logging.getLogger(__name__)

FORMATS = ("text", "pg19", "jsonl", "proofpile", "parquet", "tfds", "builtin")
PARQUET_TEXT_FIELDS = {"pg19": "text", "xsum": "document", "cnn_dailymail": "article"}
_PG19_NAME = re.compile(r"^\d+\.txt$")


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One unit of preparation work; its documents become one output shard.

    Attributes:
        format: one of `FORMATS`.
        paths: input files (or, for tfds, the dataset name).
        text_field: record field holding the text (jsonl/parquet/tfds).
        start: first record (tfds only).
        stop: one past the last record (tfds only).
        data_dir: tfds data_dir (tfds only).
        split: split name (tfds only).
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


def _list_files(root: str, *, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted regular files under `root` (recursive), optionally filtered by suffix."""
    if os.path.isfile(root):
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if suffixes is None or name.endswith(suffixes):
                out.append(os.path.join(dirpath, name))
    return out


def _group(format_, files, per_shard, **kw) -> list[ShardTask]:
    """Group per-document files into shard tasks of `per_shard` files."""
    return [
        ShardTask(format_, tuple(files[i : i + per_shard]), **kw)
        for i in range(0, len(files), per_shard)
    ]


def plan_shards(
    inputs: list[str],
    *,
    format: str,
    split: str = "train",
    text_field: str | None = None,
    files_per_shard: int = 64,
    records_per_shard: int = 10_000,
    data_dir: str | None = None,
    holdout_every: int = 0,
    manual_dir: str | None = None,
) -> list[ShardTask]:
    """Validate the inputs and split the work into shard tasks, before anything is tokenized.

    Args:
        inputs: input paths (files or directories); for `tfds`, one dataset name.
        format: one of `FORMATS`.
        split: PG-19/proof-pile subdirectory or tfds split.
        text_field: record field with the text; format default when None.
        files_per_shard: documents per shard for one-file-per-document formats.
        records_per_shard: records per shard for tfds.
        data_dir: tfds data_dir.
        holdout_every: `text` only: split files into train/validation (see module docstring).
        manual_dir: tfds only: build `local_pg19`/`local_proofpile` from this local copy first.

    Returns:
        The shard tasks, in a deterministic order.

    Raises:
        ValueError: unknown format, missing input, nothing to read, missing parquet column.
    """
    if format not in FORMATS:
        raise ValueError(f"{format=} is unknown; choose one of {FORMATS}")
    if holdout_every and (format != "text" or split not in ("train", "validation")):
        raise ValueError(
            f"{holdout_every=} needs format='text' and split 'train' or 'validation', "
            f"got {format=}, {split=}"
        )
    if format == "builtin":
        return [ShardTask("builtin", ("pydoc_data.topics",), split=split)]
    if not inputs:
        raise ValueError("no inputs given; pass at least one file or directory")
    if format == "tfds":
        from gca_jax.data import tfds_source  # tfds is heavy: import only when asked for.

        return tfds_source.plan_tfds(
            inputs,
            split=split,
            text_field=text_field,
            data_dir=data_dir,
            per_shard=records_per_shard,
            manual_dir=manual_dir,
        )
    for path in inputs:
        if not os.path.exists(path):
            raise ValueError(f"input {path=} does not exist (format={format!r})")
    tasks: list[ShardTask] = []
    for path in inputs:
        tasks += _plan_one(path, format, split, text_field, files_per_shard, holdout_every)
    if not tasks:
        raise ValueError(f"{inputs=} hold no input files for format={format!r}")
    return tasks


def _plan_one(path, format_, split, text_field, files_per_shard, holdout) -> list[ShardTask]:
    """Shard tasks for a single input path."""
    if format_ == "text":
        files = _list_files(path)
        if holdout:
            files = [
                f for i, f in enumerate(files) if (i % holdout == 0) == (split == "validation")
            ]
        return _group("text", files, files_per_shard)
    if format_ == "pg19":
        root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
        if not os.path.isdir(root):
            raise ValueError(
                f"pg19 input {path=} must be a directory with a {split!r} subdirectory"
            )
        files = [f for f in _list_files(root) if _PG19_NAME.match(os.path.basename(f))]
        return _group("pg19", files, files_per_shard)
    if format_ in ("jsonl", "proofpile"):
        root = path
        if format_ == "proofpile" and os.path.isdir(os.path.join(path, split)):
            root = os.path.join(path, split)
        files = _list_files(root, suffixes=(".jsonl", ".jsonl.gz"))
        field = text_field or "text"
        return [ShardTask(format_, (f,), text_field=field) for f in files]
    assert format_ == "parquet", format_
    files = _list_files(path, suffixes=(".parquet",))
    field = text_field or "text"
    for f in files:
        _check_parquet_column(f, field)
    return [ShardTask("parquet", (f,), text_field=field) for f in files]


def _check_parquet_column(path: str, field: str) -> None:
    """Raise if a parquet file lacks the text column."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if field not in names:
        raise ValueError(
            f"parquet {path=} has no column text_field={field!r}; columns are {names} "
            f"(defaults by dataset: {PARQUET_TEXT_FIELDS})"
        )


def _read_text_file(path: str, skipped: collections.Counter) -> str | None:
    """Strict UTF-8 text of a file, or None (counted) when unreadable, undecodable or empty."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        logger.warning("skipping %s: %s", path, e)
        skipped["unreadable"] += 1
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        logger.warning("skipping %s: not valid UTF-8", path)
        skipped["undecodable"] += 1
        return None
    if not text.strip():
        skipped["empty"] += 1
        return None
    return text


def _iter_jsonl(path: str, field: str, arxiv_only: bool, skipped) -> Iterator[str]:
    """Texts of the lines of a (gzipped) jsonl file; a corrupt tail is one counted skip."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                text = _jsonl_text(line, path, lineno, field, arxiv_only, skipped)
                if text is not None:
                    yield text
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
        logger.warning("stopping early in %s: %s", path, e)
        skipped["unreadable"] += 1


def _jsonl_text(line, path, lineno, field, arxiv_only, skipped) -> str | None:
    """The text of one jsonl line, or None (counted) when it is bad, filtered or empty."""
    if not line.strip():
        return None
    try:
        record = json.loads(line.decode("utf-8"))
        text = record[field]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        logger.warning("skipping %s:%d: not a JSON object with %r", path, lineno, field)
        skipped["bad_record"] += 1
        return None
    if arxiv_only and not _is_arxiv(record):
        skipped["filtered"] += 1
        return None
    if not isinstance(text, str) or not text.strip():
        skipped["empty"] += 1
        return None
    return text


def _is_arxiv(record: dict) -> bool:
    """proof-pile filter: meta.config == 'arxiv' (meta may be a dict or a JSON string)."""
    meta = record.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return False
    return isinstance(meta, dict) and meta.get("config") == "arxiv"


def iter_documents(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """Yield the document texts of one shard task, counting skipped inputs in `skipped`."""
    if task.format in ("text", "pg19"):
        for path in task.paths:
            text = _read_text_file(path, skipped)
            if text is not None:
                yield text
    elif task.format in ("jsonl", "proofpile"):
        yield from _iter_jsonl(task.paths[0], task.text_field, task.format == "proofpile", skipped)
    elif task.format == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(task.paths[0])
        for batch in pf.iter_batches(columns=[task.text_field], batch_size=256):
            for text in batch.column(0).to_pylist():
                if not isinstance(text, str) or not text.strip():
                    skipped["empty"] += 1
                    continue
                yield text
    elif task.format == "tfds":
        from gca_jax.data import tfds_source

        yield from tfds_source.iter_tfds(task, skipped)
    elif task.format == "builtin":
        from gca_jax.data import builtin

        yield from builtin.builtin_documents(task.split)
    else:
        raise AssertionError(task.format)
