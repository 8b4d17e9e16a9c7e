"""`parquet`: Hugging Face parquet files (or directories of them), one document per row.

The text column is `text_field` (default "text"); the datasets we know name it differently
(`TEXT_FIELDS`). Every file is checked for the column while planning.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from gca_jax.data.sources import files
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

TEXT_FIELDS = {"pg19": "text", "xsum": "document", "cnn_dailymail": "article"}
_BATCH_ROWS = 256


def _check_column(path: str, field: str) -> None:
    """Raise if a parquet file lacks the text column."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if field not in names:
        raise ValueError(
            f"parquet {path=} has no column text_field={field!r}; columns are {names} "
            f"(defaults by dataset: {TEXT_FIELDS})"
        )


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per parquet file, each checked for the text column."""
    field = options.text_field or "text"

    def plan_path(path):
        names = files.list_files(path, suffixes=(".parquet",))
        for name in names:
            _check_column(name, field)
        return [ShardTask("parquet", (name,), text_field=field) for name in names]

    return files.plan_each_path(inputs, "parquet", plan_path)


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The non-empty texts of one parquet file's column."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(task.paths[0])
    for batch in pf.iter_batches(columns=[task.text_field], batch_size=_BATCH_ROWS):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str) or not text.strip():
                skipped["empty"] += 1
                continue
            yield text


SOURCE = Source(
    name="parquet",
    inputs="HF parquet files or directories",
    notes="`--text-field`: pg19 `text`, xsum `document`, cnn_dailymail `article`",
    plan=_plan,
    read=_read,
    options=frozenset({"text_field"}),
)
