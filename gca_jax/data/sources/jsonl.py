"""`jsonl`: `*.jsonl` / `*.jsonl.gz` files (or directories of them), one document per line.

The text is read from the field `text_field` (default "text"). A line that is not a JSON object
with that field is a counted `bad_record`; a corrupt or truncated gzip file keeps the lines before
the damage and counts one `unreadable`.
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
from collections.abc import Callable, Iterator

from gca_jax.data.sources import files
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz")
DEFAULT_TEXT_FIELD = "text"


def plan_files(format_: str, root: str, options: PlanOptions) -> list[ShardTask]:
    """One task per jsonl file under `root` (the line-per-document formats share this)."""
    field = options.text_field or DEFAULT_TEXT_FIELD
    return [
        ShardTask(format_, (f,), text_field=field)
        for f in files.list_files(root, suffixes=SUFFIXES)
    ]


def iter_records(
    path: str,
    field: str,
    skipped: collections.Counter,
    *,
    keep: Callable[[dict], bool] | None = None,
) -> Iterator[tuple[int, str]]:
    """`(line number, text)` of the good lines of a (gzipped) jsonl file, 1-based.

    Args:
        path: the file.
        field: record field holding the text.
        skipped: counts `bad_record`, `filtered` (`keep` said no), `empty` and `unreadable`.
        keep: a record filter, applied to well-formed records only.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                text = _line_text(line, path, lineno, field, keep, skipped)
                if text is not None:
                    yield lineno, text
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
        logger.warning("stopping early in %s: %s", path, e)
        skipped["unreadable"] += 1


def _line_text(line, path, lineno, field, keep, skipped) -> str | None:
    """The text of one jsonl line, or None (counted) when it is bad, filtered or empty."""
    if not line.strip():
        return None
    try:
        record = json.loads(line.decode("utf-8"))
        text = record[field]
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
    ):  # TypeError: not a dict.
        logger.warning("skipping %s:%d: not a JSON object with %r", path, lineno, field)
        skipped["bad_record"] += 1
        return None
    if keep is not None and not keep(record):
        skipped["filtered"] += 1
        return None
    if not isinstance(text, str) or not text.strip():
        skipped["empty"] += 1
        return None
    return text


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per jsonl file of the inputs."""
    return files.plan_each_path(inputs, "jsonl", lambda path: plan_files("jsonl", path, options))


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The texts of one jsonl file."""
    for _, text in iter_records(task.paths[0], task.text_field, skipped):
        yield text


SOURCE = Source(
    name="jsonl",
    inputs="`*.jsonl` / `*.jsonl.gz` files or directories",
    notes="one document per line; `--text-field` (default `text`)",
    plan=_plan,
    read=_read,
    options=frozenset({"text_field"}),
)
