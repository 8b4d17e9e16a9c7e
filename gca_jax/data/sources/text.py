"""`text`: plain files, one document each; a file, or a directory searched recursively.

With `holdout_every=k`, the files at sorted positions 0, k, 2k, ... of each input form the
"validation" split and the rest the "train" split (for corpora without splits, e.g. the Python
docs).
"""

from __future__ import annotations

from gca_jax.data.sources import files
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

HOLDOUT_SPLITS = ("train", "validation")


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per `files_per_shard` files, after the holdout selection."""
    k, split = options.holdout_every, options.split
    if k < 0:
        raise ValueError(f"holdout_every={k} must be >= 0 (0: no holdout)")
    if k and split not in HOLDOUT_SPLITS:
        raise ValueError(f"holdout_every={k} needs split in {HOLDOUT_SPLITS}, got {split=}")

    def plan_path(path):
        names = files.list_files(path)
        if k:
            names = [f for i, f in enumerate(names) if (i % k == 0) == (split == "validation")]
        return files.group_files("text", names, options.files_per_shard)

    return files.plan_each_path(inputs, "text", plan_path)


SOURCE = Source(
    name="text",
    inputs="files or directories (recursive)",
    notes="one file = one document; `--holdout-every K` splits",
    plan=_plan,
    read=files.read_text_files,
    options=frozenset({"holdout_every"}),
)
