"""grain pipelines over a prepared corpus: random training windows and consecutive eval windows.

The corpus is read as one token stream: documents in manifest order, each ending with EOT
(docs/spec.md §5.3). `TokenStream.read(start, n)` returns stream tokens [start, start + n),
wrapping around at the end.

Training sample `i` is a window whose start is drawn from `np.random.default_rng((seed, i))`,
uniform over [0, num_tokens - T] (or, with `align_to_doc_start`, the start of a uniformly drawn
document). The sample depends only on (seed, i), so a run is reproducible and resumable from the
iterator state, which is just the next sample index. Process p of n reads samples p, p + n, p + 2n,
...: the global batch of step k is the union of the processes' local batches of step k, and
processes never share a sample.

Batches are dicts of numpy arrays `{"tokens": int32 (B, T)}` with B the per-process batch size,
ready for `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import logging
import os

import grain
import numpy as np

from gca_jax.data import manifest as manifest_lib

logger = logging.getLogger(__name__)

# Training index space: effectively infinite (about 1e12 samples) and still a valid length.
_NUM_TRAIN_SAMPLES = 1 << 40


class TokenStream:
    """Random access to the concatenated token stream of a prepared corpus.

    Args:
        corpus_dir: a directory written by `prepare_corpus`.

    Raises:
        ValueError: if the corpus is missing, incomplete or empty.
    """

    def __init__(self, corpus_dir: str | os.PathLike):
        self.corpus_dir = os.fspath(corpus_dir)
        self.manifest = manifest_lib.read_manifest(self.corpus_dir)
        self.doc_lengths = manifest_lib.load_doc_lengths(self.corpus_dir, self.manifest)
        if self.doc_lengths.size == 0:
            raise ValueError(f"corpus {self.corpus_dir!r} holds no documents")
        self.doc_starts = np.concatenate([[0], np.cumsum(self.doc_lengths)])
        self.num_tokens = int(self.doc_starts[-1])
        self.dtype = np.dtype(self.manifest["token_dtype"])
        self._paths = manifest_lib.shard_paths(self.corpus_dir, self.manifest)
        self._source = None

    def __getstate__(self):
        # Readers hold file handles; workers reopen them lazily.
        return self.__dict__ | {"_source": None}

    def _records(self):
        """The ArrayRecord source over all shards, opened on first use."""
        if self._source is None:
            self._source = grain.sources.ArrayRecordDataSource(self._paths)
        return self._source

    def document(self, index: int) -> np.ndarray:
        """Tokens of document `index` (EOT included), int32."""
        return np.frombuffer(self._records()[index], dtype=self.dtype).astype(np.int32)

    def read(self, start: int, length: int) -> np.ndarray:
        """Stream tokens [start, start + length), wrapping around at the end; int32 (length,)."""
        out = np.empty((length,), dtype=np.int32)
        pos, filled = start % self.num_tokens, 0
        while filled < length:
            doc = int(np.searchsorted(self.doc_starts, pos, side="right")) - 1
            offset = pos - int(self.doc_starts[doc])
            take = min(length - filled, int(self.doc_lengths[doc]) - offset)
            raw = self._records()[doc]
            itemsize = self.dtype.itemsize
            piece = np.frombuffer(raw, self.dtype, count=take, offset=offset * itemsize)
            out[filled : filled + take] = piece
            filled += take
            pos = (pos + take) % self.num_tokens
        return out


class RandomWindows:
    """Random-access source of training windows: sample i depends only on (seed, i)."""

    def __init__(self, stream: TokenStream, seq_len: int, seed: int, align_to_doc_start: bool):
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        self.align_to_doc_start = align_to_doc_start

    def __len__(self) -> int:
        return _NUM_TRAIN_SAMPLES

    def start(self, index: int) -> int:
        """Stream offset of sample `index` (docs/spec.md §5.3: uniform over the stream)."""
        rng = np.random.default_rng((self.seed, index))
        if self.align_to_doc_start:
            return int(self.stream.doc_starts[rng.integers(self.stream.doc_lengths.size)])
        return int(rng.integers(self.stream.num_tokens - self.seq_len + 1))

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self.stream.read(self.start(index), self.seq_len)}


class _ConsecutiveWindows:
    """Random-access source of the non-overlapping windows [i*T, (i+1)*T) (docs/spec.md §5.4)."""

    def __init__(self, stream: TokenStream, seq_len: int, max_windows: int | None):
        self.stream, self.seq_len = stream, seq_len
        count = stream.num_tokens // seq_len
        self.count = count if max_windows is None else min(count, max_windows)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self.stream.read(index * self.seq_len, self.seq_len)}


def _check_positive(**kwargs) -> None:
    """Raise ValueError naming the first argument that is not a positive int."""
    for name, value in kwargs.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive int")


def _check_process(process_index: int, process_count: int) -> None:
    """Raise ValueError unless 0 <= process_index < process_count."""
    _check_positive(process_count=process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"{process_index=} must be in [0, {process_count=})")


def make_train_dataset(
    corpus_dir: str | os.PathLike,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    align_to_doc_start: bool = False,
    num_workers: int = 0,
    num_threads: int = 2,
    tokenizer_identity: dict | None = None,
) -> grain.IterDataset:
    """Infinite, deterministic stream of random training windows (docs/spec.md §5.3).

    Args:
        corpus_dir: a prepared corpus directory.
        seq_len: T, tokens per window.
        batch_size: per-process batch size B (global batch = B * process_count).
        seed: data seed; same seed and process layout give the same batches.
        process_index: this JAX process (`jax.process_index()`).
        process_count: number of JAX processes (`jax.process_count()`).
        align_to_doc_start: start every window at a document start instead of anywhere.
        num_workers: grain worker processes (`mp_prefetch`); 0 reads in threads of this process.
            With workers the calling script needs a `__main__` guard and parsed absl flags.
        num_threads: reader threads per process.
        tokenizer_identity: when given (the model's or checkpoint's tokenizer identity), refuse a
            corpus prepared with another tokenizer.

    Returns:
        A `grain.IterDataset` of `{"tokens": int32 (B, T)}`; `iter(ds)` has get_state/set_state and
        works with `grain.checkpoint.CheckpointSave`.

    Raises:
        ValueError: bad sizes, process layout, a corpus shorter than one window, or a tokenizer
            mismatch.
    """
    _check_positive(seq_len=seq_len, batch_size=batch_size)
    _check_process(process_index, process_count)
    stream = TokenStream(corpus_dir)
    if tokenizer_identity is not None:
        manifest_lib.check_tokenizer_matches(stream.manifest, tokenizer_identity)
    if stream.num_tokens < seq_len:
        raise ValueError(
            f"corpus {os.fspath(corpus_dir)!r} has num_tokens={stream.num_tokens} < {seq_len=}"
        )
    source = RandomWindows(stream, seq_len, seed, align_to_doc_start)
    return batched_stream(
        source,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        num_workers=num_workers,
        num_threads=num_threads,
    )


def batched_stream(
    source, *, batch_size, process_index, process_count, num_workers, num_threads
) -> grain.IterDataset:
    """Shard a random-access source by process, batch it, and read it with threads or workers."""
    _check_positive(batch_size=batch_size, num_threads=num_threads)
    _check_process(process_index, process_count)
    ds = grain.MapDataset.source(source)[process_index::process_count]
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))
    if num_workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return ds


def make_eval_dataset(
    corpus_dir: str | os.PathLike,
    *,
    seq_len: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    max_windows: int | None = None,
    drop_remainder: bool = False,
    tokenizer_identity: dict | None = None,
) -> grain.MapDataset:
    """Consecutive non-overlapping windows [i*T, (i+1)*T), i < num_tokens // T (docs/spec.md §5.4).

    Args:
        corpus_dir: a prepared corpus directory.
        seq_len: T, tokens per window.
        batch_size: per-process batch size.
        process_index: this JAX process; process p takes windows p, p + n, ...
        process_count: number of JAX processes.
        max_windows: evaluate at most this many windows (the first ones).
        drop_remainder: drop a last partial batch (keeps shapes static under jit).
        tokenizer_identity: when given, refuse a corpus prepared with another tokenizer.

    Returns:
        A finite `grain.MapDataset` of `{"tokens": int32 (b, T)}` batches, b <= B; `len()` is the
        number of batches.

    Raises:
        ValueError: bad sizes, process layout or a tokenizer mismatch.
    """
    _check_positive(seq_len=seq_len, batch_size=batch_size)
    _check_process(process_index, process_count)
    stream = TokenStream(corpus_dir)
    if tokenizer_identity is not None:
        manifest_lib.check_tokenizer_matches(stream.manifest, tokenizer_identity)
    source = _ConsecutiveWindows(stream, seq_len, max_windows)
    ds = grain.MapDataset.source(source)[process_index::process_count]
    return ds.batch(batch_size, drop_remainder=drop_remainder)
