"""`rdata`: character vectors in R data files, one vector per document (e.g. Jane Austen's novels).

Inputs: `.rda`/`.RData`/`.rds` files, lazy-load databases (`Rdata.rdb` with its `.rdx`), or
directories searched recursively for `.rda`, `.RData` and `.rdb` files (`.rds` files only when
named: in a package they are metadata). Read with `rserial` (plain Python). Every top-level
character vector is a document: its elements are lines, joined with newlines (NA as an empty
line), named by its R name; other objects are counted as `not_text`. Debian's
`r-cran-janeaustenr` holds the six novels in `usr/lib/R/site-library/janeaustenr/data/Rdata.rdb`
(`emma`, ..., `sensesensibility`: 3.95 MB); pass that `data` directory or the package root.
`--split` train/validation/test by vector within each file (`splits`).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterator

from gca_jax.data.sources import files, rserial, splits
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

logger = logging.getLogger(__name__)

JANEAUSTENR_DATA = os.path.join("usr", "lib", "R", "site-library", "janeaustenr", "data")
_DIR_SUFFIXES = (".rda", ".RData", ".rdata", ".rdb")
_FILE_SUFFIXES = (*_DIR_SUFFIXES, ".rds")


def read_objects(path: str) -> dict[str, rserial.RObject]:
    """The named objects of one R data file (an `.rds` object is named after its file)."""
    if path.endswith(".rdb"):
        return rserial.read_lazyload(path)
    if path.endswith(".rds"):
        return {os.path.basename(path).removesuffix(".rds"): rserial.read_rds(path)}
    return rserial.read_rda(path)


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per R data file."""
    splits.check_split("rdata", options.split)

    def plan_path(path):
        if os.path.isfile(path):
            if not path.endswith(_FILE_SUFFIXES):
                raise ValueError(f"{path=} is not an R data file (one of {_FILE_SUFFIXES})")
            found = [path]
        else:
            packaged = os.path.join(path, JANEAUSTENR_DATA)
            found = files.list_files(
                packaged if os.path.isdir(packaged) else path, suffixes=_DIR_SUFFIXES
            )
        return [ShardTask("rdata", (f,), split=options.split) for f in found]

    return files.plan_each_path(inputs, "rdata", plan_path)


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The character vectors of one file that fall in the task's split."""
    path = task.paths[0]
    try:
        objects = read_objects(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        logger.warning("skipping %s: %s", path, e)
        skipped["unreadable"] += 1
        return
    texts = {}
    for name, obj in objects.items():
        if obj.type != "character":
            skipped["not_text"] += 1
        elif not any(obj.value):
            skipped["empty"] += 1
        else:
            texts[name] = "\n".join(line or "" for line in obj.value) + "\n"
    keep = splits.keep(list(texts), task.split)
    yield from (text for text, k in zip(texts.values(), keep) if k)


SOURCE = Source(
    name="rdata",
    inputs="R data files or directories",
    notes=(
        "`.rda`/`.rds`/`Rdata.rdb`, one character vector each; "
        "`--split` train, validation or test (§3.4)"
    ),
    plan=_plan,
    read=_read,
)
