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
FIELDS = {"xsum": ("document", "summary"), "cnn_dailymail": ("article", "highlights")}


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


def generation_prompt(document_ids, fmt: SummarizationFormat) -> tuple[np.ndarray, int]:
    """Generation prompt (docs/spec.md §8): left-padded k*c ids, and the held-out ":" to force.

    Returns:
        `(prompt int32 (k * c,), first_token_id)`; no truncation, as in the original.
    """
    prompt = np.concatenate([np.asarray(document_ids, np.int32), fmt.cue])
    padded = _left_pad(prompt, _aligned(prompt.shape[0], fmt.chunk_size), fmt.pad_id)
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
