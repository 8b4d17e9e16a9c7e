"""`proofpile`: the arXiv part of proof-pile (docs/spec.md §5.1), from its `*.jsonl[.gz]` files.

A `split` subdirectory (train/dev/test) of an input is used when present. Lines are read as in
`jsonl`; of the well-formed ones, only those `is_arxiv` accepts are kept, the rest are counted as
`filtered`. The tfds builder `local_proofpile` reads through `iter_arxiv_documents` too, so both
routes give the same documents.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator

from gca_jax.data.sources import files, jsonl
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source


def is_arxiv(record: dict) -> bool:
    """Whether a proof-pile record is an arXiv document: `meta.config == "arxiv"`.

    proof-pile stores `meta` as an object, and some copies as a JSON string of one; both count.
    A record whose `meta` is missing, not an object, or a string that is not JSON is *not* arXiv:
    the corpus is arXiv-only, and such a record cannot be shown to belong to it. It is dropped
    and counted, never fatal: per-document problems never stop a preparation (docs/data.md §3).
    (The tfds builder used to raise on such a string and abort the whole build.)
    """
    meta = record.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return False
    return isinstance(meta, dict) and meta.get("config") == "arxiv"


def iter_arxiv_documents(
    path: str, skipped: collections.Counter, *, text_field: str = jsonl.DEFAULT_TEXT_FIELD
) -> Iterator[tuple[int, str]]:
    """`(line number, text)` of one proof-pile file's arXiv documents (`jsonl.iter_records`)."""
    return jsonl.iter_records(path, text_field, skipped, keep=is_arxiv)


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per jsonl file of each input's split directory (or of the input itself)."""

    def plan_path(path):
        split_dir = os.path.join(path, options.split)
        return jsonl.plan_files(
            "proofpile", split_dir if os.path.isdir(split_dir) else path, options
        )

    return files.plan_each_path(inputs, "proofpile", plan_path)


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The arXiv texts of one proof-pile file."""
    for _, text in iter_arxiv_documents(task.paths[0], skipped, text_field=task.text_field):
        yield text


SOURCE = Source(
    name="proofpile",
    inputs="proof-pile root or files",
    notes=(
        '`*.jsonl[.gz]`, keeps `meta.config == "arxiv"` (docs/spec.md §5.1); '
        "uses `<root>/<split>` if present"
    ),
    plan=_plan,
    read=_read,
    options=frozenset({"text_field"}),
)
