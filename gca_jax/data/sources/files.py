"""Helpers of the formats that read local files: listing, planning per path, strict UTF-8."""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Iterator

from gca_jax.data.sources.base import ShardTask

logger = logging.getLogger(__name__)


def list_files(root: str, *, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted regular files under `root` (recursive, hidden names skipped), optionally by suffix."""
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


def group_files(format_: str, files: list[str], per_shard: int) -> list[ShardTask]:
    """Group one-document files into shard tasks of `per_shard` files."""
    return [
        ShardTask(format_, tuple(files[i : i + per_shard])) for i in range(0, len(files), per_shard)
    ]


def plan_each_path(
    inputs: list[str], format_: str, plan_path: Callable[[str], list[ShardTask]]
) -> list[ShardTask]:
    """Check that the input paths exist, then concatenate `plan_path(path)` over them.

    Raises:
        ValueError: no inputs, a missing input, or no input files at all.
    """
    if not inputs:
        raise ValueError("no inputs given; pass at least one file or directory")
    for path in inputs:
        if not os.path.exists(path):
            raise ValueError(f"input {path=} does not exist (format={format_!r})")
    tasks = [task for path in inputs for task in plan_path(path)]
    if not tasks:
        raise ValueError(f"{inputs=} hold no input files for format={format_!r}")
    return tasks


def read_text_file(path: str, skipped: collections.Counter) -> str | None:
    """Strict UTF-8 text of a file, or None (counted) when unreadable, undecodable or empty."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        logger.warning("skipping %s: %s", path, e)
        skipped["unreadable"] += 1
        return None
    return decode_text(raw, path, skipped)


def decode_text(raw: bytes, path: str, skipped: collections.Counter) -> str | None:
    """Strict UTF-8 text of a document's bytes, or None (counted) when undecodable or empty."""
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


def read_text_files(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The texts of a task whose paths are one document each."""
    for path in task.paths:
        text = read_text_file(path, skipped)
        if text is not None:
            yield text
