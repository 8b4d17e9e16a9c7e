"""`pg19`: the PG-19 layout, `<root>/{train,validation,test}/<id>.txt`; `split` picks the directory.

Only files named `<digits>.txt` are books (the release also holds e.g. a README). An input that is
itself a directory of books, without split subdirectories, is read as is.
"""

from __future__ import annotations

import os
import re

from gca_jax.data.sources import files
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

_BOOK = re.compile(r"^\d+\.txt$")


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per `files_per_shard` books of the split directory."""
    split = options.split

    def plan_path(path):
        root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
        if not os.path.isdir(root):
            raise ValueError(
                f"pg19 input {path=} must be a directory with a {split!r} subdirectory"
            )
        books = [f for f in files.list_files(root) if _BOOK.match(os.path.basename(f))]
        return files.group_files("pg19", books, options.files_per_shard)

    return files.plan_each_path(inputs, "pg19", plan_path)


SOURCE = Source(
    name="pg19",
    inputs="PG-19 root",
    notes="`<root>/<split>/<digits>.txt`; `--split` train, validation or test",
    plan=_plan,
    read=files.read_text_files,
)
