"""Summarization formatting for XSum / CNN-DailyMail fine-tuning and generation (docs/spec.md §8).

An example is `prompt = document ids + enc("|Summary") + enc(":")` followed by `summary ids + EOT`.
The prompt is left-padded with pad to a length of k * c + 1 (c = the model's S), so that generation
can feed the first k * c ids as whole chunks and force the final ":" as the first decoded token.
The loss covers document and summary tokens alike (pad excluded), as in the original.

**Deliberate fix (docs/spec.md §8, §9.22).** When `len(prompt) + len(summary) > max_len`, the
original cuts the end of the prompt, which removes the "|Summary:" cue from exactly the long
documents. Here the summary is still truncated to its last `max_sum_len` ids, but it is the
*document* that is cut (its beginning is kept) and the cue always ends the prompt; the prompt keeps
its k * c + 1 length.

Worked example, c = 4, max_len = 12, bytes-like ids, cue = "|S:" (3 ids), summary "ab" + EOT:
document "0123456789" does not fit; the prompt budget is 12 - 3 = 9 = 2 * 4 + 1, so the prompt is
"012345" + "|S:" (9 ids), then "ab" EOT: 12 ids, cue kept.
"""

from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np

CUE_PIECES = ("|Summary", ":")
# Column names of the Hugging Face parquet releases.
FIELDS = {
    "xsum": ("document", "summary"),
    "cnn_dailymail": ("article", "highlights"),
    "synopsis": ("document", "summary"),  # train.prepare --recipe synopsis (docs/data.md §6.1)
}


@dataclasses.dataclass(frozen=True)
class SummarizationFormat:
    """Ids and sizes for formatting.

    Attributes:
        cue: ids of "|Summary" then ":" (encoded piecewise, as in the original).
        eot_id: appended to the summary.
        pad_id: prompt left-padding and right-padding of the sequence.
        max_len: sequence length T (a multiple of chunk_size for DRT, e.g. 4095).
        max_sum_len: summaries are cut to their last `max_sum_len` ids.
        chunk_size: c; prompts are left-padded to k * c + 1 ids.
    """

    cue: np.ndarray
    eot_id: int
    pad_id: int
    max_len: int
    max_sum_len: int = 1024
    chunk_size: int = 63

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> SummarizationFormat:
        """Build the cue from `tokenizer` (a `gca_jax.data.tokenizer.Tokenizer`)."""
        cue = np.concatenate([np.asarray(tokenizer.encode(p), np.int32) for p in CUE_PIECES])
        return cls(cue=cue, eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id, **kwargs)

    def __post_init__(self):
        if self.chunk_size <= 0 or self.max_len <= 0 or self.max_sum_len <= 0:
            raise ValueError(
                f"chunk_size={self.chunk_size}, max_len={self.max_len} and "
                f"max_sum_len={self.max_sum_len} must be positive"
            )
        budget = self.max_len - self.max_sum_len - 1  # EOT ends the summary.
        if (budget - 1) // self.chunk_size * self.chunk_size + 1 < self.cue.shape[0] + 1:
            raise ValueError(
                f"max_len={self.max_len} leaves no room for a k * chunk_size + 1 prompt with the "
                f"cue after max_sum_len={self.max_sum_len} summary ids "
                f"(chunk_size={self.chunk_size})"
            )


def _left_pad(ids: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Left-pad `ids` to `length`."""
    out = np.full((length,), pad_id, np.int32)
    out[length - ids.shape[0] :] = ids
    return out


def _aligned(n: int, c: int) -> int:
    """The original's padded prompt length ceil(n / c) * c + 1 (always > n; docs/spec.md §8)."""
    return -(-n // c) * c + 1


def format_example(document_ids, summary_ids, fmt: SummarizationFormat) -> dict:
    """Format one (document, summary) pair for training (docs/spec.md §8 collator, cue fix applied).

    Args:
        document_ids: int ids of the document.
        summary_ids: int ids of the summary (no EOT).
        fmt: the format.

    Returns:
        `{"tokens": int32 (T,), "loss_mask": bool (T,) (True on document, cue and summary ids),
        "prompt_len": int}`; the summary starts at `prompt_len`.
    """
    doc = np.asarray(document_ids, np.int32)
    summary = np.append(np.asarray(summary_ids, np.int32), np.int32(fmt.eot_id))
    prompt = np.concatenate([doc, fmt.cue])
    prompt_len = _aligned(prompt.shape[0], fmt.chunk_size)
    if prompt_len + summary.shape[0] > fmt.max_len:
        summary = summary[-fmt.max_sum_len :]
        budget = fmt.max_len - summary.shape[0]
        prompt_len = min(prompt_len, (budget - 1) // fmt.chunk_size * fmt.chunk_size + 1)
        keep = max(prompt_len - fmt.cue.shape[0], 0)
        prompt = np.concatenate([doc[:keep], fmt.cue])[-prompt_len:]
    tokens = np.full((fmt.max_len,), fmt.pad_id, np.int32)
    tokens[:prompt_len] = _left_pad(prompt, prompt_len, fmt.pad_id)
    tokens[prompt_len : prompt_len + summary.shape[0]] = summary
    loss_mask = np.zeros((fmt.max_len,), bool)
    loss_mask[prompt_len - prompt.shape[0] : prompt_len + summary.shape[0]] = True
    return {"tokens": tokens, "loss_mask": loss_mask, "prompt_len": int(prompt_len)}


def generation_prompt(
    document_ids, fmt: SummarizationFormat, *, max_prompt_len: int | None = None
) -> tuple[np.ndarray, int]:
    """Generation prompt (docs/spec.md §8): left-padded k*c ids, and the held-out ":" to force.

    Args:
        document_ids: int ids of the document.
        fmt: the format.
        max_prompt_len: when given, the document is cut (its beginning kept, the cue kept) so
            that the padded prompt plus ":" has at most this many ids, as `format_example` cuts a
            training document; None = no truncation, as in the original.

    Returns:
        `(prompt int32 (k * c,), first_token_id)`.

    Raises:
        ValueError: a `max_prompt_len` with no room for one chunk holding the cue.
    """
    doc = np.asarray(document_ids, np.int32)
    length = _aligned(doc.shape[0] + fmt.cue.shape[0], fmt.chunk_size)
    if max_prompt_len is not None:
        room = (max_prompt_len - 1) // fmt.chunk_size * fmt.chunk_size + 1
        if room < fmt.cue.shape[0] + 1:
            raise ValueError(
                f"{max_prompt_len=} leaves no room for a k * {fmt.chunk_size} + 1 prompt holding "
                f"the {fmt.cue.shape[0]}-id cue"
            )
        if length > room:  # Cut like format_example: the prompt fills all k * c + 1 ids.
            doc, length = doc[: room - fmt.cue.shape[0]], room
    prompt = np.concatenate([doc, fmt.cue])
    padded = _left_pad(prompt, length, fmt.pad_id)
    return padded[:-1], int(padded[-1])


def read_pairs(path: str | os.PathLike, *, dataset: str | None = None, fields=None):
    """(document, summary) string pairs of a parquet file or a jsonl file.

    Args:
        path: `*.parquet` or `*.jsonl`.
        dataset: "xsum" or "cnn_dailymail" to pick the column names.
        fields: explicit `(document_field, summary_field)`.

    Returns:
        A list of (document, summary) tuples.

    Raises:
        ValueError: unknown dataset, missing file or missing fields.
    """
    path = os.fspath(path)
    if fields is None:
        if dataset not in FIELDS:
            raise ValueError(f"{dataset=} must be one of {sorted(FIELDS)} or give fields=")
        fields = FIELDS[dataset]
    if not os.path.isfile(path):
        raise ValueError(f"summarization input {path=} is not a file")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        missing = [f for f in fields if f not in names]
        if missing:
            raise ValueError(f"parquet {path=} lacks columns {missing}; it has {names}")
        table = pq.read_table(path, columns=list(fields))
        return list(zip(*(table.column(f).to_pylist() for f in fields)))
    import json

    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    try:
        return [(r[fields[0]], r[fields[1]]) for r in rows]
    except KeyError as e:
        raise ValueError(f"jsonl {path=} lacks field {e}") from e


class SummarizationSource:
    """Random-access formatted examples (a grain data source); tokenizes on the fly."""

    def __init__(self, pairs, tokenizer, fmt: SummarizationFormat):
        self.pairs, self.tokenizer, self.fmt = pairs, tokenizer, fmt

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        doc, summary = self.pairs[index]
        enc = self.tokenizer.encode
        return format_example(enc(doc), enc(summary), self.fmt)


def make_summarization_dataset(pairs, tokenizer, fmt, *, seed: int | None = None):
    """A grain MapDataset of formatted examples, shuffled with `seed` when given."""
    ds = grain.MapDataset.source(SummarizationSource(pairs, tokenizer, fmt))
    return ds if seed is None else ds.shuffle(seed=seed)


def split_files(pairs_dir: str | os.PathLike, split: str) -> list[str]:
    """The files of `split` in a pairs directory.

    `<split>.jsonl`, else `<split>.parquet` or the Hugging Face shards `<split>-*.parquet`.

    Raises:
        ValueError: no such file.
    """
    import glob

    pairs_dir = os.fspath(pairs_dir)
    if not os.path.isdir(pairs_dir):
        raise ValueError(
            f"summarization pairs {pairs_dir=} is not a directory; make one with "
            "`python -m train.prepare --recipe synopsis data/debian --out data/synopsis`"
        )
    for pattern in (f"{split}.jsonl", f"{split}.parquet", f"{split}-*.parquet"):
        found = sorted(glob.glob(os.path.join(glob.escape(pairs_dir), pattern)))
        if found:
            return found
    raise ValueError(
        f"summarization pairs {pairs_dir=} has no {split}.jsonl, {split}.parquet or "
        f"{split}-*.parquet"
    )


def read_split(pairs_dir: str | os.PathLike, split: str) -> list[tuple[str, str]]:
    """(document, summary) pairs of one split of a pairs directory (`split_files`).

    jsonl files hold `document`/`summary` (the synopsis recipe, XSum); parquet files XSum's
    `document`/`summary` or CNN/DailyMail's `article`/`highlights` columns.

    Raises:
        ValueError: a missing split, or files with neither pair of fields.
    """
    pairs = []
    for path in split_files(pairs_dir, split):
        fields = FIELDS["xsum"]
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            if "article" in pq.read_schema(path).names:
                fields = FIELDS["cnn_dailymail"]
        pairs += read_pairs(path, fields=fields)
    if not pairs:
        raise ValueError(f"summarization pairs {os.fspath(pairs_dir)!r}: split {split!r} is empty")
    return pairs


def _encode_all(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Ids of every text, in one batched call when the tokenizer has one."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(texts)
    return [np.asarray(tokenizer.encode(t), np.int32) for t in texts]


# A GPT-2 token covers far fewer characters than this on real text: documents are cut here before
# tokenization, which bounds the work without changing the first max_len ids.
_CHARS_PER_TOKEN_BOUND = 16


class EncodedPairs:
    """The pairs' ids, tokenized once (documents cut as `_CHARS_PER_TOKEN_BOUND` says)."""

    def __init__(self, pairs, tokenizer, max_len: int):
        cut = max_len * _CHARS_PER_TOKEN_BOUND
        self.documents = _encode_all(tokenizer, [d[:cut] for d, _ in pairs])
        self.summaries = _encode_all(tokenizer, [s for _, s in pairs])

    def __len__(self) -> int:
        return len(self.documents)


class _TrainSource:
    """Infinite random-access training examples; sample i depends only on (seed, i).

    Epoch e is a permutation of the pairs seeded by (seed, e).
    """

    def __init__(self, encoded: EncodedPairs, fmt: SummarizationFormat, seed: int):
        self.encoded, self.fmt, self.seed = encoded, fmt, seed

    def __len__(self) -> int:
        from gca_jax.data.pipeline import _NUM_TRAIN_SAMPLES

        return _NUM_TRAIN_SAMPLES

    def pair_index(self, index: int) -> int:
        """Which pair sample `index` is."""
        epoch, pos = divmod(index, len(self.encoded))
        return int(np.random.default_rng((self.seed, epoch)).permutation(len(self.encoded))[pos])

    def __getitem__(self, index: int) -> dict:
        i = self.pair_index(index)
        enc = self.encoded
        out = format_example(enc.documents[i], enc.summaries[i], self.fmt)
        start = out["prompt_len"]
        answer_mask = np.zeros(out["loss_mask"].shape, bool)
        answer_mask[start:] = out["loss_mask"][start:]  # The summary and its EOT.
        return {"tokens": out["tokens"], "loss_mask": out["loss_mask"], "answer_mask": answer_mask}


def make_summarization_train_dataset(
    pairs,
    tokenizer,
    fmt: SummarizationFormat,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
    num_threads: int = 2,
) -> grain.IterDataset:
    """Infinite, deterministic, checkpointable batches of formatted training examples.

    Sample i is pair `permutation(seed, i // N)[i % N]` (N pairs: every epoch shows each pair
    once), formatted by `format_example`; process p of n takes samples p, p + n, ... like
    `pipeline.make_train_dataset`, and the iterator state is the next sample index.

    Returns:
        A `grain.IterDataset` of `{"tokens": int32 (B, T), "loss_mask": bool (B, T),
        "answer_mask": bool (B, T)}`, `answer_mask` marking the summary and its EOT.

    Raises:
        ValueError: no pairs, bad sizes or process layout.
    """
    from gca_jax.data.pipeline import batched_stream

    if len(pairs) == 0:
        raise ValueError("summarization training needs at least one (document, summary) pair")
    source = _TrainSource(EncodedPairs(pairs, tokenizer, fmt.max_len), fmt, seed)
    return batched_stream(
        source,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        num_workers=num_workers,
        num_threads=num_threads,
    )
