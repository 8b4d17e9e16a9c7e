"""A training mix of LM windows and NIAH samples, for NIAH fine-tuning (docs/spec.md §6.6).

Sample i first takes the training window i (exactly as `make_train_dataset`, so the haystacks are
random T-token windows of the corpus), then draws its kind from `probabilities` with
`np.random.default_rng((seed, i, 1))`. An "lm" sample is the window itself; a NIAH sample inserts
the task into that window with `np.random.default_rng((seed, i, 2))`. As in the original, the LM
loss covers haystack, needles, question and answer; only the pad tail after the answer is masked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import grain
import numpy as np

from gca_jax.data import manifest as manifest_lib
from gca_jax.data import niah
from gca_jax.data.pipeline import RandomWindows, TokenStream, batched_stream

KINDS = ("lm", *niah.TASKS)


class _MixSource:
    """Random-access mixed samples of tokens, loss_mask and answer_mask, each (T,).

    answer_mask marks the answer tokens of a NIAH sample (none in an LM sample).
    """

    def __init__(self, windows, templates, kinds, probs, chunk_size, passkey_len, seed):
        self.windows, self.templates = windows, templates
        self.kinds, self.probs = kinds, probs
        self.chunk_size, self.passkey_len, self.seed = chunk_size, passkey_len, seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        tokens = self.windows[index]["tokens"]
        kind = self.kinds[
            np.random.default_rng((self.seed, index, 1)).choice(len(self.kinds), p=self.probs)
        ]
        if kind == "lm":
            ones = np.ones(tokens.shape, bool)
            return {"tokens": tokens, "loss_mask": ones, "answer_mask": ~ones}
        sample = niah.make_niah_sample(
            tokens,
            task=kind,
            templates=self.templates,
            chunk_size=self.chunk_size,
            rng=np.random.default_rng((self.seed, index, 2)),
            passkey_len=self.passkey_len,
        )
        answer_mask = np.zeros(tokens.shape, bool)
        answer_mask[sample["answer_start"] : sample["answer_start"] + sample["answer_len"]] = True
        return {
            "tokens": sample["tokens"],
            "loss_mask": sample["loss_mask"],
            "answer_mask": answer_mask,
        }


def make_niah_mix_dataset(
    corpus_dir: str | os.PathLike,
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    chunk_size: int,
    probabilities: Mapping[str, float],
    passkey_len: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
    num_threads: int = 2,
) -> grain.IterDataset:
    """Infinite, deterministic, checkpointable mix of LM windows and NIAH samples.

    Args:
        corpus_dir: a prepared corpus directory (the haystacks).
        tokenizer: the corpus's tokenizer (checked against its manifest).
        seq_len: T, a multiple of `chunk_size`.
        batch_size: per-process batch size.
        seed: data seed.
        chunk_size: c = the model's S.
        probabilities: kind -> probability, kinds from `KINDS`; they must sum to 1,
            e.g. `{"lm": 0.5, "single": 0.25, "multihop": 0.25}`.
        passkey_len: tokens per passkey; task default when None.
        process_index: this JAX process.
        process_count: number of JAX processes.
        num_workers: grain worker processes (needs a `__main__` guard).
        num_threads: reader threads per process.

    Returns:
        A `grain.IterDataset` of `{"tokens": int32 (B, T), "loss_mask": bool (B, T),
        "answer_mask": bool (B, T)}`.

    Raises:
        ValueError: unknown kinds, probabilities not summing to 1, T % c != 0, tokenizer mismatch.
    """
    unknown = sorted(set(probabilities) - set(KINDS))
    if unknown:
        raise ValueError(f"probabilities has unknown kinds {unknown}; valid kinds are {KINDS}")
    kinds = tuple(k for k in KINDS if probabilities.get(k, 0) > 0)
    probs = np.asarray([probabilities[k] for k in kinds], np.float64)
    if any(v < 0 for v in probabilities.values()) or not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"{probabilities=} must be non-negative and sum to 1")
    if seq_len % chunk_size:
        raise ValueError(f"{seq_len=} must be a multiple of {chunk_size=} (docs/spec.md §6.1)")
    stream = TokenStream(corpus_dir)
    manifest_lib.check_tokenizer_matches(stream.manifest, tokenizer.identity)
    if stream.num_tokens < seq_len:
        raise ValueError(f"corpus has num_tokens={stream.num_tokens} < {seq_len=}")
    source = _MixSource(
        RandomWindows(stream, seq_len, seed, align_to_doc_start=False),
        niah.NiahTemplates.from_tokenizer(tokenizer),
        kinds,
        probs,
        chunk_size,
        passkey_len,
        seed,
    )
    return batched_stream(
        source,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        num_workers=num_workers,
        num_threads=num_threads,
    )
