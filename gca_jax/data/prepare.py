"""Corpus preparation: local inputs -> ArrayRecord shards of token ids + manifest.json.

`prepare_corpus` prepares any registered source format (`gca_jax.data.sources`);
`prepare_builtin_corpus` is its shortcut for the embedded default corpus. Each shard task (see
`sources.plan_shards`) becomes `shard-<i>.array_record` (one record per document: its token ids
followed by EOT, as raw bytes of the manifest's `token_dtype`), `<shard>.lengths.npy`, and last a
`<shard>.done.json` marker, written atomically. The marker is the commit point: a re-run skips
shards that have one and redoes the others, so an interrupted run resumes without losing or
duplicating work. Everything that can be checked before tokenizing (paths, format, options,
tokenizer, a directory prepared differently or not writable) raises `ValueError` before any shard
is written. Documents that are not text (not UTF-8, or holding NUL bytes: binary files) are
counted skips; inputs of which no document survives raise `ValueError` and leave no corpus behind
(docs/data.md §3). `config_lines` gives the config keys a model trained on the corpus needs.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable

import numpy as np

from gca_jax.data import gpt2, sources
from gca_jax.data import manifest as manifest_lib
from gca_jax.data import tokenizer as tokenizer_lib

logger = logging.getLogger(__name__)

_DONE_SUFFIX = ".done.json"
_worker_tokenizers: dict[str, object] = {}  # Per-process cache, filled lazily in workers.
_NO_SPACE = ("No space left on device", "Disk quota exceeded")


class _NoDocuments(Exception):
    """No document of the inputs survived; args[0] holds the skip counts."""


def _describe(source: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in source.items())


def _no_documents_error(source: dict, out_dir: str, skipped: dict) -> ValueError:
    """The error for inputs of which every document was skipped."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"
    return ValueError(
        f"no usable document in the inputs ({_describe(source)}; skipped: {counts}), so no "
        f"corpus was written to {out_dir}; pass text inputs (binary or non-UTF-8 files are "
        "skipped) and the --format that matches them"
    )


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What one finished shard contributed.

    Attributes:
        index: shard number in the plan.
        num_documents: documents written.
        num_tokens: tokens written (EOTs included).
        text_bytes: UTF-8 bytes of the text tokenized.
        cpu_seconds: CPU time the worker spent on the shard (robust to a busy machine).
        skipped: skipped inputs by reason.
        reused: True when the shard was already finished by an earlier run.
    """

    index: int
    num_documents: int
    num_tokens: int
    text_bytes: int
    skipped: dict
    cpu_seconds: float = 0.0
    reused: bool = False


def shard_name(index: int) -> str:
    """File name of shard `index`."""
    return f"shard-{index:05d}.array_record"


def _get_tokenizer(spec: str):
    """Tokenizer for `spec`, built once per process."""
    if spec not in _worker_tokenizers:
        _worker_tokenizers[spec] = tokenizer_lib.load_tokenizer(spec)
    return _worker_tokenizers[spec]


def _documents(task: sources.ShardTask, skipped: collections.Counter):
    """The texts of a task, without binary ones (NUL bytes: valid UTF-8, but not text)."""
    for text in sources.iter_documents(task, skipped):
        if "\x00" in text:
            skipped["binary"] += 1
            continue
        yield text


def _write_records(path: str, task, tok, token_dtype, skipped) -> tuple[list[int], int]:
    """Write a task's documents to the ArrayRecord file `path`; (record lengths, text bytes)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    lengths, text_bytes = [], 0
    try:
        writer = ArrayRecordWriter(path, "group_size:1")
        try:
            for text in _documents(task, skipped):
                ids = tok.encode_array(text)
                record = np.empty((ids.shape[0] + 1,), dtype=token_dtype)
                record[:-1] = ids
                record[-1] = tok.eot_id
                writer.write(record.tobytes())
                lengths.append(record.shape[0])
                text_bytes += len(text.encode("utf-8"))
        finally:
            writer.close()
    except RuntimeError as e:  # array_record reports I/O errors as RuntimeError.
        if any(m in str(e) for m in _NO_SPACE):
            raise OSError(errno.ENOSPC, "No space left on device", path) from e
        raise
    return lengths, text_bytes


def _write_shard(args) -> ShardResult:
    """Tokenize one shard task and commit it (runs in a worker process)."""
    index, task, out_dir, tokenizer_spec, token_dtype = args
    tok = _get_tokenizer(tokenizer_spec)
    cpu_start = time.process_time()
    path = os.path.join(out_dir, shard_name(index))
    skipped: collections.Counter = collections.Counter()
    lengths, text_bytes = _write_records(path + ".tmp", task, tok, token_dtype, skipped)
    np.save(path + ".lengths.npy.tmp.npy", np.asarray(lengths, dtype=np.int64))
    os.replace(path + ".tmp", path)
    os.replace(path + ".lengths.npy.tmp.npy", path + ".lengths.npy")
    result = ShardResult(
        index,
        len(lengths),
        int(sum(lengths)),
        text_bytes,
        dict(skipped),
        cpu_seconds=time.process_time() - cpu_start,
    )
    manifest_lib.write_json_atomic(path + _DONE_SUFFIX, dataclasses.asdict(result))
    return result


def _read_done(out_dir: str, index: int) -> ShardResult | None:
    """The committed result of shard `index`, or None when it must be (re)done."""
    path = os.path.join(out_dir, shard_name(index))
    if not os.path.isfile(path + _DONE_SUFFIX):
        return None
    with open(path + _DONE_SUFFIX) as f:
        data = json.load(f)
    if not (os.path.isfile(path) and os.path.isfile(path + ".lengths.npy")):
        return None
    return dataclasses.replace(ShardResult(**data), reused=True)


def _resolve_tokenizer(out_dir, tokenizer, train_vocab, plan, plan_desc):
    """Load (or train) the tokenizer, check `out_dir` against it, keep its file inside `out_dir`."""
    local = os.path.join(out_dir, "tokenizer.json")
    has_manifest = os.path.isfile(os.path.join(out_dir, manifest_lib.MANIFEST_NAME))
    if train_vocab:
        if not os.path.isfile(local):
            if has_manifest:
                raise ValueError(f"{out_dir=} holds a corpus prepared without a trained tokenizer")
            skipped: collections.Counter = collections.Counter()
            seen = collections.Counter()

            def texts():
                for task in plan:
                    for text in _documents(task, skipped):
                        seen["documents"] += 1
                        yield text

            tokenizer_lib.train_bpe(texts(), vocab_size=train_vocab, out_path=local)
            if not seen["documents"]:
                os.remove(local)
                raise _NoDocuments(dict(skipped))
        tok = tokenizer_lib.load_tokenizer(local)
        _check_existing(out_dir, tok, plan_desc)
        if tok.vocab_size < train_vocab:
            logger.warning(
                "asked for a trained tokenizer of %d ids, the inputs hold too few distinct "
                "merges for more than %d; set model.vocab_size=%d (not %d)",
                train_vocab,
                tok.vocab_size,
                tok.vocab_size,
                train_vocab,
            )
        return tok
    tok = tokenizer_lib.load_tokenizer(tokenizer)
    _check_existing(out_dir, tok, plan_desc)
    if isinstance(tok, tokenizer_lib.HFTokenizer):
        if os.path.abspath(tok.path) != os.path.abspath(local):
            shutil.copyfile(tok.path, local)
        tok = tokenizer_lib.load_tokenizer(local)
    return tok


def _check_existing(out_dir: str, tok, plan_desc: list) -> None:
    """Refuse an output directory prepared with another tokenizer or other inputs."""
    if not os.path.isfile(os.path.join(out_dir, manifest_lib.MANIFEST_NAME)):
        return
    old = manifest_lib.read_manifest(out_dir, require_complete=False)
    try:
        manifest_lib.check_tokenizer_matches(out_dir, tok.identity)
    except ValueError as e:
        raise ValueError(f"output directory: {e}; or use a new output directory") from e
    if old.get("plan") != plan_desc:
        raise ValueError(
            f"{out_dir=} holds a corpus prepared from other inputs or options; "
            "use a new output directory (or delete this one) to prepare these inputs"
        )


def prepare_corpus(
    inputs: list[str],
    out_dir: str | os.PathLike,
    *,
    format: str,
    tokenizer: str = "bytes",
    split: str = "train",
    text_field: str | None = None,
    num_workers: int = 1,
    files_per_shard: int = 64,
    records_per_shard: int = 10_000,
    data_dir: str | None = None,
    train_tokenizer_vocab: int | None = None,
    holdout_every: int = 0,
    manual_dir: str | None = None,
    progress: Callable[[ShardResult, int], None] | None = None,
) -> dict:
    """Tokenize local inputs into a corpus directory (resumable).

    Args:
        inputs: input files/directories (for `tfds`, the dataset name; for `builtin`, none).
        out_dir: corpus directory to create or resume.
        format: one of `sources.FORMATS` (see docs/data.md §3).
        tokenizer: "bytes" or a tokenizer.json path (see `load_tokenizer`).
        split: split to read (PG-19 / proof-pile subdirectory, tfds split); kept in the manifest.
        text_field: record field with the text (jsonl/proofpile/parquet/tfds).
        num_workers: tokenizer processes; 1 runs in this process.
        files_per_shard: documents per shard for one-file-per-document formats.
        records_per_shard: records per shard for tfds.
        data_dir: tfds data_dir.
        train_tokenizer_vocab: train a byte-level BPE of this size on the inputs first, use it.
        holdout_every: `text` only: every k-th file is "validation", the rest "train".
        manual_dir: `tfds` only: build `local_pg19`/`local_proofpile` from this local copy first.
        progress: called as `progress(result, total_shards)` after each shard.

    Returns:
        The final manifest, plus this run's `seconds` (wall), `cpu_seconds` (summed over workers)
        and `text_bytes` (tokenized now, reused shards excluded).

    Raises:
        ValueError: bad inputs, an unknown format (the message lists the known ones), an option
            the format does not use, an output directory that cannot be written or holds another
            tokenizer or plan, or inputs of which no document survives (nothing is left behind).
        OSError: a full disk (see `prepare_tasks`).
    """
    out_dir = os.fspath(out_dir)
    plan = sources.plan_shards(
        list(inputs),
        format=format,
        split=split,
        text_field=text_field,
        files_per_shard=files_per_shard,
        records_per_shard=records_per_shard,
        data_dir=data_dir,
        holdout_every=holdout_every,
        manual_dir=manual_dir,
    )
    source = {"format": format, "inputs": [os.path.abspath(p) for p in inputs]}
    return prepare_tasks(
        plan,
        out_dir,
        tokenizer=tokenizer,
        split=split,
        source=source,
        num_workers=num_workers,
        train_tokenizer_vocab=train_tokenizer_vocab,
        progress=progress,
    )


def prepare_tasks(
    plan: list[sources.ShardTask],
    out_dir: str | os.PathLike,
    *,
    tokenizer: str,
    split: str,
    source: dict,
    num_workers: int = 1,
    train_tokenizer_vocab: int | None = None,
    progress: Callable[[ShardResult, int], None] | None = None,
) -> dict:
    """Tokenize planned shard tasks (of one or several formats) into a corpus directory.

    `prepare_corpus` plans one format's inputs and calls this; a recipe (`gca_jax.data.recipes`)
    concatenates the plans of several formats.

    Args:
        plan: shard tasks from `sources.plan_shards`, in output order.
        out_dir: corpus directory to create or resume.
        tokenizer: see `prepare_corpus`.
        split: the split name kept in the manifest.
        source: JSON-able description of where the tasks came from, kept in the manifest.
        num_workers: see `prepare_corpus`.
        train_tokenizer_vocab: see `prepare_corpus`.
        progress: see `prepare_corpus`.

    Returns:
        See `prepare_corpus`.

    Raises:
        ValueError: an output directory that cannot be written or holds another tokenizer or
            plan, or inputs of which no document survives (what this call wrote is removed).
        OSError: a full disk (ENOSPC, naming the file or `out_dir`); re-run to resume.
    """
    out_dir = os.fspath(out_dir)
    before = _make_out_dir(out_dir)
    try:
        return _prepare(
            plan,
            out_dir,
            tokenizer=tokenizer,
            split=split,
            source=source,
            num_workers=num_workers,
            train_tokenizer_vocab=train_tokenizer_vocab,
            progress=progress,
        )
    except _NoDocuments as e:
        _discard(out_dir, before, len(plan))
        raise _no_documents_error(source, out_dir, e.args[0]) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not e.filename:
            raise OSError(e.errno, e.strerror, out_dir) from e
        raise


def _make_out_dir(out_dir: str) -> set[str]:
    """Create `out_dir` if needed and check it is writable; returns the names it held before.

    Raises:
        ValueError: it cannot be created (a file in the way, no permission) or written.
    """
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"output directory {out_dir=} cannot be created ({e.strerror or e}); pass a writable "
            "directory as --out"
        ) from e
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {out_dir=} is not writable; pass another --out")
    return set(os.listdir(out_dir))


def _discard(out_dir: str, before: set[str], num_shards: int) -> None:
    """Remove what a preparation without documents wrote (nothing the directory held before)."""
    ours = {manifest_lib.MANIFEST_NAME, manifest_lib.MANIFEST_NAME + ".tmp", "tokenizer.json"}
    for i in range(num_shards):
        name = shard_name(i)
        ours |= {name + ext for ext in ("", ".tmp", ".lengths.npy", _DONE_SUFFIX)}
        ours |= {name + _DONE_SUFFIX + ".tmp", name + ".lengths.npy.tmp.npy"}
    for name in set(os.listdir(out_dir)) & ours:
        if name == "tokenizer.json" and name in before:
            continue  # Possibly the user's own file (--tokenizer OUT/tokenizer.json).
        os.remove(os.path.join(out_dir, name))
    if not os.listdir(out_dir):
        os.rmdir(out_dir)


def _prepare(
    plan, out_dir, *, tokenizer, split, source, num_workers, train_tokenizer_vocab, progress
) -> dict:
    """The body of `prepare_tasks`, in an existing writable `out_dir`."""
    plan_desc = [t.describe() for t in plan]
    tok = _resolve_tokenizer(out_dir, tokenizer, train_tokenizer_vocab, plan, plan_desc)
    token_dtype = manifest_lib.token_dtype_for(tok.vocab_size)
    base = {
        "format": manifest_lib.FORMAT,
        "complete": False,
        "tokenizer": tok.identity,
        "tokenizer_spec": "bytes" if tok.identity["kind"] == "bytes" else "tokenizer.json",
        "token_dtype": token_dtype,
        "source": source,
        "split": split,
        "plan": plan_desc,
    }
    manifest_lib.write_json_atomic(os.path.join(out_dir, manifest_lib.MANIFEST_NAME), base)

    start = time.perf_counter()
    results: dict[int, ShardResult] = {}
    todo = []
    for i, task in enumerate(plan):
        done = _read_done(out_dir, i)
        if done is None:
            todo.append((i, task, out_dir, tok.spec, token_dtype))
        else:
            results[i] = done
            if progress:
                progress(done, len(plan))
    logger.info("%d shards planned, %d already done", len(plan), len(results))
    for result in _run(todo, num_workers):
        results[result.index] = result
        if progress:
            progress(result, len(plan))
    return _finish(out_dir, base, [results[i] for i in range(len(plan))], start)


def prepare_builtin_corpus(
    out_dir: str | os.PathLike, tokenizer: str = "bytes", *, split: str = "train"
) -> dict:
    """Prepare the embedded corpus (`sources.builtin`) into `out_dir`, resumable like any corpus.

    Args:
        out_dir: corpus directory to write.
        tokenizer: "bytes" or a tokenizer.json path.
        split: "train" or "validation".

    Returns:
        The manifest (see `prepare_corpus`).

    Raises:
        ValueError: an unknown split (before anything is written) or a mismatched `out_dir`.
    """
    return prepare_corpus([], out_dir, format="builtin", tokenizer=tokenizer, split=split)


def config_lines(made: dict[str, dict], tokenizer: str | None = None) -> list[str]:
    """The config keys of a model trained on prepared corpora, as ``key: value`` lines.

    Args:
        made: {corpus directory: manifest}, all prepared with one tokenizer (e.g. a recipe's
            splits).
        tokenizer: the tokenizer spec the preparation was given; "gpt2" is kept as such, any
            other file is named by the copy inside the (first) corpus directory.

    Returns:
        ``model.vocab_size``, ``model.pad_id``, ``model.landmark_id`` and ``data.tokenizer``, then
        ``data.corpus_dir`` (the train split, or the only corpus) and ``data.eval_corpus_dir``
        (a validation split).
    """
    first_dir, first = next(iter(made.items()))
    ident = first["tokenizer"]
    if ident["kind"] == "bytes":
        spec = tokenizer_lib.BYTES_SPEC
    elif tokenizer == gpt2.NAME:
        spec = gpt2.NAME
    else:
        spec = os.path.join(first_dir, "tokenizer.json")
    lines = [
        f"model.vocab_size: {ident['vocab_size']}",
        f"model.pad_id: {ident['pad_id']}",
        f"model.landmark_id: {ident['landmark_id']}",
        f"data.tokenizer: {spec}",
    ]
    for out, m in made.items():
        if m.get("split") == "validation" and len(made) > 1:
            lines.append(f"data.eval_corpus_dir: {out}")
        elif m.get("split") == "train" or len(made) == 1:
            lines.append(f"data.corpus_dir: {out}")
    return lines


def _run(todo, num_workers):
    """Yield shard results, in this process or in a pool of spawned workers."""
    if num_workers <= 1 or len(todo) <= 1:
        for args in todo:
            yield _write_shard(args)
        return
    ctx = multiprocessing.get_context("spawn")  # Safe with threaded parents (tokenizers, jax).
    with ctx.Pool(min(num_workers, len(todo))) as pool:
        yield from pool.imap_unordered(_write_shard, todo)


def _finish(out_dir, base, results, start) -> dict:
    """Aggregate shard results into the final manifest and write it."""
    skipped: collections.Counter = collections.Counter()
    for r in results:
        skipped.update(r.skipped)
    shards = [
        {"name": shard_name(r.index), "num_documents": r.num_documents, "num_tokens": r.num_tokens}
        for r in results
        if r.num_documents > 0
    ]
    if not any(r.num_documents for r in results):
        raise _NoDocuments(dict(skipped))
    manifest = base | {
        "complete": True,
        "num_documents": sum(r.num_documents for r in results),
        "num_tokens": sum(r.num_tokens for r in results),
        "shards": shards,
        "skipped": dict(skipped),
    }
    manifest_lib.write_json_atomic(os.path.join(out_dir, manifest_lib.MANIFEST_NAME), manifest)
    fresh = [r for r in results if not r.reused]
    return manifest | {
        "seconds": time.perf_counter() - start,
        "text_bytes": sum(r.text_bytes for r in fresh),
        "cpu_seconds": sum(r.cpu_seconds for r in fresh),
        "shards_reused": len(results) - len(fresh),
    }
