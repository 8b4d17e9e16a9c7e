"""`tfds`: any tensorflow-datasets dataset already prepared in a data_dir, read offline.

The single input is the dataset name. `plan_tfds` opens
`tfds.data_source(name, split=..., data_dir=..., download=False)` (no network, no TensorFlow;
`tfds.list_builders()` is never called because it needs the network) and splits its records into
shard tasks. With `manual_dir`, the project's builders `local_pg19` / `local_proofpile`
are first prepared from local files (`build_local`). Text features arrive as bytes and are decoded
as strict UTF-8 (undecodable records are counted skips). tensorflow-datasets is imported only
inside the functions, when a tfds source is asked for: it is heavy.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterator

from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

logger = logging.getLogger(__name__)

# Text feature of the datasets whose layout we know; others need `text_field`.
DEFAULT_TEXT_FIELDS = {"local_pg19": "book_text", "local_proofpile": "text", "pg19": "book_text"}
LOCAL_BUILDERS = ("local_pg19", "local_proofpile")


def build_local(name: str, *, manual_dir: str, data_dir: str) -> None:
    """Prepare a project builder (`local_pg19` or `local_proofpile`) from files in `manual_dir`.

    Raises:
        ValueError: unknown builder or missing manual_dir.
    """
    import tensorflow_datasets as tfds

    from gca_jax.data import tfds_builders

    builders = {
        "local_pg19": tfds_builders.LocalPg19,
        "local_proofpile": tfds_builders.LocalProofpile,
    }
    if name not in builders:
        raise ValueError(f"manual_dir is only for the builders {LOCAL_BUILDERS}, not {name=}")
    if not os.path.isdir(manual_dir):
        raise ValueError(f"{manual_dir=} is not a directory")
    builder = builders[name](data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )


def _open(name: str, split: str, data_dir: str | None):
    """The random-access source of a prepared dataset, or ValueError when it is not prepared."""
    import tensorflow_datasets as tfds

    from gca_jax.data import tfds_builders  # noqa: F401  Registers the project builders.

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"tfds dataset {name=} is unknown ({e})") from e
    if not builder.is_prepared():
        raise ValueError(
            f"tfds dataset {name=} is not prepared in {data_dir=}; prepare it first with "
            "file_format='array_record' (for local_pg19/local_proofpile pass manual_dir)"
        )
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:
        raise ValueError(f"tfds dataset {name=} must be prepared as array_record: {e}") from e


def plan_tfds(
    inputs, *, split: str, text_field, data_dir, per_shard: int, manual_dir=None
) -> list[ShardTask]:
    """Shard tasks over the records of one prepared tfds dataset.

    Raises:
        ValueError: not one name, an unknown or unprepared dataset, a missing text field, no
            records.
    """
    if len(inputs) != 1:
        raise ValueError(f"format 'tfds' takes exactly one dataset name, got {inputs=}")
    name = inputs[0]
    data_dir = os.fspath(data_dir) if data_dir else None
    if manual_dir:
        if not data_dir:
            raise ValueError("building a tfds dataset from manual_dir needs data_dir")
        build_local(name, manual_dir=manual_dir, data_dir=data_dir)
    source = _open(name, split, data_dir)
    field = text_field or DEFAULT_TEXT_FIELDS.get(name)
    features = list(source.dataset_info.features.keys())
    if field not in features:
        raise ValueError(f"tfds dataset {name=} has no text_field={field!r}; features: {features}")
    n = len(source)
    if n == 0:
        raise ValueError(f"tfds dataset {name=} {split=} is empty")
    return [
        ShardTask(
            "tfds",
            (name,),
            text_field=field,
            start=a,
            stop=min(a + per_shard, n),
            data_dir=data_dir or "",
            split=split,
        )
        for a in range(0, n, per_shard)
    ]


def iter_tfds(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """Texts of records [task.start, task.stop) of a prepared tfds dataset."""
    source = _open(task.paths[0], task.split, task.data_dir or None)
    for i in range(task.start, task.stop):
        value = source[i][task.text_field]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                skipped["undecodable"] += 1
                continue
        if not isinstance(value, str) or not value.strip():
            skipped["empty"] += 1
            continue
        yield value


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """`plan_tfds` with the options of `prepare_corpus`."""
    return plan_tfds(
        inputs,
        split=options.split,
        text_field=options.text_field,
        data_dir=options.data_dir,
        per_shard=options.records_per_shard,
        manual_dir=options.manual_dir,
    )


SOURCE = Source(
    name="tfds",
    inputs="one dataset name",
    notes=(
        "any dataset prepared as array_record in `--data-dir`; "
        "`--manual-dir` builds `local_pg19` / `local_proofpile` first"
    ),
    plan=_plan,
    read=iter_tfds,
    options=frozenset({"text_field", "data_dir", "manual_dir"}),
)
