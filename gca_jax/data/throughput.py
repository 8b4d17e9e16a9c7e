"""Measure pipeline throughput (tokens/s), for docs/data.md; called from a one-line command."""

from __future__ import annotations

import time

from gca_jax.data.pipeline import make_train_dataset


def measure_train_pipeline(
    corpus_dir: str,
    *,
    seq_len: int,
    batch_size: int,
    num_batches: int,
    num_workers: int = 0,
    num_threads: int = 2,
    warmup_batches: int = 5,
) -> dict:
    """Time `num_batches` batches of `make_train_dataset` after `warmup_batches`.

    With `num_workers > 0` the caller needs a `__main__` guard (or `python -c`) and parsed absl
    flags, as for any grain `mp_prefetch`.

    Returns:
        `{"tokens_per_s", "cpu_tokens_per_s" (per CPU-second of this process, excluding workers),
        "seconds", "batches"}`.
    """
    ds = make_train_dataset(
        corpus_dir,
        seq_len=seq_len,
        batch_size=batch_size,
        seed=0,
        num_workers=num_workers,
        num_threads=num_threads,
    )
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        batch = next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = num_batches * batch["tokens"].size
    return {
        "tokens_per_s": tokens / wall,
        "cpu_tokens_per_s": tokens / max(cpu, 1e-9),
        "seconds": wall,
        "batches": num_batches,
    }
