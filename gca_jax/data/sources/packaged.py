"""What the formats of Debian documentation packages share: finding the files, names, splits.

Their input is a directory: the root a package was unpacked into with `dpkg -x PACKAGE.deb ROOT`
(or `/` once it is installed), or the documentation directory itself. Under a root, the format's
layout pattern (e.g. `usr/share/perl/*/pod`) names the directory; when several versions match, the
highest version is taken. Documents are the files ending in one of the format's suffixes, found
recursively, optionally gzipped (Debian compresses larger documentation files); a document's name
is its path relative to that directory without `.gz`, and `splits` assigns it a split.
"""

from __future__ import annotations

import collections
import glob
import gzip
import logging
import os
import re
from collections.abc import Iterator

from gca_jax.data.sources import files, splits
from gca_jax.data.sources.base import PlanOptions, ShardTask

logger = logging.getLogger(__name__)


def _version_key(path: str) -> list:
    """Natural sort key: "6.12" after "6.9"."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def docs_dir(root: str, pattern: str) -> str:
    """The documentation directory under `root` (the highest version of `pattern`), or `root`."""
    matches = sorted(
        (p for p in glob.glob(os.path.join(glob.escape(root), pattern)) if os.path.isdir(p)),
        key=_version_key,
    )
    if len(matches) > 1:
        logger.info("%s: %d versions of %s, taking %s", root, len(matches), pattern, matches[-1])
    return matches[-1] if matches else root


def named_files(base: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """Document name -> file under `base` (plain or gzipped; both present: the plain one)."""
    found = files.list_files(base, suffixes=suffixes + tuple(s + ".gz" for s in suffixes))
    by_name: dict[str, str] = {}
    for f in found:
        name = os.path.relpath(f, base).removesuffix(".gz")
        if name not in by_name or not f.endswith(".gz"):
            by_name[name] = f
    return by_name


def plan(
    format_: str,
    inputs: list[str],
    options: PlanOptions,
    *,
    pattern: str,
    suffixes: tuple[str, ...],
) -> list[ShardTask]:
    """Shard tasks over the `split` documents of each input directory."""
    splits.check_split(format_, options.split)

    def plan_path(path):
        if not os.path.isdir(path):
            raise ValueError(f"format {format_!r} takes directories, got the file {path=}")
        by_name = named_files(docs_dir(path, pattern), suffixes)
        names, found = list(by_name), list(by_name.values())
        kept = [f for f, k in zip(found, splits.keep(names, options.split)) if k]
        return files.group_files(format_, kept, options.files_per_shard)

    return files.plan_each_path(inputs, format_, plan_path)


def read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The texts of a task's files, gunzipping `.gz` ones (a corrupt one is `unreadable`)."""
    for path in task.paths:
        if not path.endswith(".gz"):
            text = files.read_text_file(path, skipped)
        else:
            try:
                with gzip.open(path, "rb") as f:
                    raw = f.read()
            except (OSError, EOFError) as e:
                logger.warning("skipping %s: %s", path, e)
                skipped["unreadable"] += 1
                continue
            text = files.decode_text(raw, path, skipped)
        if text is not None:
            yield text
