"""Needle-in-a-haystack (passkey) tasks, exact to docs/spec.md §6, with any tokenizer's ids.

A sample is built from a haystack of T corpus tokens, T % c == 0 with c the chunk size (= the
model's S, docs/spec.md §6.1 and §9.15). Needles are inserted into the haystack (shifting it
right), then the question overwrites the end so that its answer starts at position T - c + 1,
i.e. **slot 1 of the last chunk**, and pad fills everything after the answer (the original's -100
tail).

Worked example for the single passkey, c = 63, GPT-2 ids (Q = 11 question ids, n = 10 passkey ids):

```
[0, start)                  haystack
[start, start + 7 + n)      needle  "|" "The passkey is:" pk "|"   (start < T - 2c - (7 + n))
...                         haystack (shifted right by the needle)
[T-c-10, T-c+1)             question "|What is the passkey? The passkey is"  (last id = slot 0)
[T-c+1, T-c+1+n)            answer pk                                        (slot 1 on)
[T-c+1+n, T)                pad
final_pos = T - c + 1       the first answer token
```

Multi-key (docs/spec.md §6.3) and multi-hop (§6.4) score the **last** answer token instead:
final_pos = T - c + answer_len. Scoring (docs/spec.md §6.5) is a single-token argmax: a hit iff
`argmax(logits[final_pos - 1]) == tokens[final_pos]` (see `is_hit`).

Unlike the original (seeded from the haystack and, for multi/multi-hop, from unseeded globals),
every sample is drawn from `np.random.default_rng((seed, index))`, so it is reproducible. Passkey
tokens are uniform over the tokenizer's non-special ids (for GPT-2: [0, 50256), as in the original).
"""

from __future__ import annotations

import dataclasses
import os
import typing

import grain
import numpy as np

from gca_jax.config import NiahTask

TASKS: tuple[str, ...] = typing.get_args(NiahTask)  # declared once, in the config schema
# Default passkey length per task (docs/spec.md §6.2-6.4): 10 when training single; 5 for
# multi/multihop.
DEFAULT_PASSKEY_LEN = {"single": 10, "multi": 5, "multihop": 5}


@dataclasses.dataclass(frozen=True)
class NiahTemplates:
    """The needle and question strings of docs/spec.md §6.1, encoded piecewise with one tokenizer.

    Attributes:
        pieces: template string -> its int32 ids.
        passkey_vocab: ids passkeys are drawn from (all non-special ids).
        pad_id: id filling the tail after the answer.
    """

    pieces: dict
    passkey_vocab: np.ndarray
    pad_id: int

    STRINGS = (
        "|",
        "The passkey is:",
        "|What is the passkey? The passkey is",
        "|The value of ",
        "is",
        ",",
        "|One of the special magic numbers for ",
        " is ",
        "|The path from",
        "|DEF",
        "->",
    )

    @classmethod
    def from_tokenizer(cls, tokenizer) -> NiahTemplates:
        """Encode every template string with `tokenizer` (a `gca_jax.data.tokenizer.Tokenizer`)."""
        pieces = {s: np.asarray(tokenizer.encode(s), dtype=np.int32) for s in cls.STRINGS}
        vocab = np.setdiff1d(
            np.arange(tokenizer.vocab_size, dtype=np.int32),
            np.asarray(sorted(tokenizer.special_ids), dtype=np.int32),
        )
        return cls(pieces=pieces, passkey_vocab=vocab, pad_id=int(tokenizer.pad_id))

    def cat(self, *parts) -> np.ndarray:
        """Concatenate template strings (looked up) and id arrays, in order."""
        return np.concatenate([self.pieces[p] if isinstance(p, str) else p for p in parts])


def _insert(hay: np.ndarray, needles: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Insert needles at sorted haystack positions (original coordinates), as one concatenation."""
    parts, prev = [], 0
    for pos, needle in zip(positions, needles):
        parts += [hay[prev:pos], needle]
        prev = int(pos)
    parts.append(hay[prev:])
    return np.concatenate(parts)


def _finish(seq, query, answer_len, *, length, chunk_size, pad_id) -> tuple[np.ndarray, int]:
    """Truncate to T, put `query` so its answer starts at T - c + 1, pad (docs/spec.md §6.2)."""
    answer_start = length - chunk_size + 1
    q_start = answer_start - (query.shape[0] - answer_len)
    out = np.full((length,), pad_id, dtype=np.int32)
    out[:q_start] = seq[:q_start]
    out[q_start : answer_start + answer_len] = query
    return out, answer_start


def _single(hay, tpl, rng, *, chunk_size, n):
    """Single passkey, docs/spec.md §6.2."""
    length = hay.shape[0]
    pk = rng.choice(tpl.passkey_vocab, size=n)
    needle = tpl.cat("|", "The passkey is:", pk, "|")
    q_len = tpl.pieces["|What is the passkey? The passkey is"].shape[0]
    q_start = length - chunk_size + 1 - q_len
    # docs/spec.md §6.2 draws start in [0, T - 2c - N). When the question is longer than a chunk
    # (small c, byte ids) the needle must also end before the question starts; for GPT-2 ids and
    # c >= 10 that bound is looser than the original one, so the original distribution is kept.
    high = min(length - 2 * chunk_size - needle.shape[0], q_start - needle.shape[0] + 1)
    if high <= 0:
        raise ValueError(
            f"haystack length T={length} too short for the single task at {chunk_size=}"
        )
    start = int(rng.integers(high))
    seq = _insert(hay, [needle], np.asarray([start]))
    query = tpl.cat("|What is the passkey? The passkey is", pk)
    out, answer_start = _finish(
        seq, query, n, length=length, chunk_size=chunk_size, pad_id=tpl.pad_id
    )
    return out, answer_start, n, answer_start, start


def _place_needles(hay, needles, query, answer_len, rng, chunk_size):
    """Shuffle needles, insert at sorted distinct positions before the query (docs/spec.md §6.3)."""
    length = hay.shape[0]
    order = rng.permutation(len(needles))
    needles = [needles[i] for i in order]
    total = sum(x.shape[0] for x in needles)
    reserve = chunk_size - 1 - answer_len + query.shape[0]
    if length - total - reserve < len(needles):
        raise ValueError(f"haystack length T={length} too short for {len(needles)} needles")
    positions = np.sort(rng.choice(length - total - reserve, size=len(needles), replace=False))
    return _insert(hay, needles, positions), int(positions[0])


def _multi(hay, tpl, rng, *, chunk_size, n):
    """Multi-key: 6 needles over 12 variables, query for var0 -> var1, docs/spec.md §6.3."""
    var = [rng.choice(tpl.passkey_vocab, size=n) for _ in range(12)]
    needles = [
        tpl.cat("|One of the special magic numbers for ", var[2 * g], " is ", var[2 * g + 1], "|")
        for g in range(6)
    ]
    query = tpl.cat("|The value of ", var[0], "is", var[1])
    seq, depth_pos = _place_needles(hay, needles, query, n, rng, chunk_size)
    out, answer_start = _finish(
        seq, query, n, length=hay.shape[0], chunk_size=chunk_size, pad_id=tpl.pad_id
    )
    return out, answer_start + n - 1, n, answer_start, depth_pos


def _multihop(hay, tpl, rng, *, chunk_size, n):
    """Multi-hop: chains var[3g] -> var[3g+1] -> var[3g+2], g in {0, 1}; docs/spec.md §6.4."""
    var = [rng.choice(tpl.passkey_vocab, size=n) for _ in range(6)]
    needles = [
        tpl.cat("|DEF", var[3 * g + h], "->", var[3 * g + h + 1], "|")
        for g in range(2)
        for h in range(2)
    ]
    query = tpl.cat("|The path from", var[0], "is", var[1], ",", var[2])
    answer_len = 2 * n + tpl.pieces[","].shape[0]
    seq, depth_pos = _place_needles(hay, needles, query, answer_len, rng, chunk_size)
    out, answer_start = _finish(
        seq, query, answer_len, length=hay.shape[0], chunk_size=chunk_size, pad_id=tpl.pad_id
    )
    return out, answer_start + answer_len - 1, answer_len, answer_start, depth_pos


_BUILDERS = {"single": _single, "multi": _multi, "multihop": _multihop}


def make_niah_sample(
    haystack: np.ndarray,
    *,
    task: str,
    templates: NiahTemplates,
    chunk_size: int,
    rng: np.random.Generator,
    passkey_len: int | None = None,
) -> dict:
    """Build one NIAH sample from a haystack.

    Args:
        haystack: int (T,) corpus tokens; T % chunk_size == 0.
        task: "single", "multi" or "multihop".
        templates: `NiahTemplates.from_tokenizer(tokenizer)`.
        chunk_size: c, the model's S.
        rng: the sample's generator.
        passkey_len: tokens per passkey/variable; `DEFAULT_PASSKEY_LEN[task]` when None.

    Returns:
        `{"tokens": int32 (T,), "loss_mask": bool (T,) (False on the pad tail), "final_pos": int,
        "answer_start": int, "answer_len": int, "target": int (tokens[final_pos]), "depth": float
        (first needle position / T)}`.

    Raises:
        ValueError: unknown task, T not a multiple of c, or a haystack too short for the task.
    """
    if task not in TASKS:
        raise ValueError(f"{task=} must be one of {TASKS}")
    length = int(haystack.shape[0])
    if chunk_size <= 0 or length % chunk_size:
        raise ValueError(f"haystack length T={length} must be a multiple of {chunk_size=}")
    n = DEFAULT_PASSKEY_LEN[task] if passkey_len is None else passkey_len
    if n <= 0:
        raise ValueError(f"passkey_len={n} must be positive")
    hay = np.asarray(haystack, dtype=np.int32)
    tokens, final_pos, answer_len, answer_start, pos = _BUILDERS[task](
        hay, templates, rng, chunk_size=chunk_size, n=n
    )
    loss_mask = np.zeros((length,), dtype=bool)
    loss_mask[: answer_start + answer_len] = True
    return {
        "tokens": tokens,
        "loss_mask": loss_mask,
        "final_pos": int(final_pos),
        "answer_start": int(answer_start),
        "answer_len": int(answer_len),
        "target": int(tokens[final_pos]),
        "depth": pos / length,
    }


def is_hit(logits_TxV: np.ndarray, tokens_T: np.ndarray, final_pos: int) -> bool:
    """Scoring of docs/spec.md §6.5: argmax of the logits at final_pos - 1 == token at final_pos."""
    return int(np.argmax(logits_TxV[final_pos - 1])) == int(tokens_T[final_pos])


def passkey_position(sample: dict) -> int:
    """Where the needle holds the answer: the first earlier occurrence of the answer tokens."""
    tokens, start, n = np.asarray(sample["tokens"]), sample["answer_start"], sample["answer_len"]
    answer = tokens[start : start + n]
    for j in range(start - n):
        if (tokens[j : j + n] == answer).all():
            return j
    raise ValueError("the answer does not occur before the question")


class NiahSource:
    """Random-access NIAH samples over a prepared corpus (a grain data source).

    Sample i takes the haystack window [i*T, (i+1)*T) of the corpus stream (consecutive windows as
    in the original eval, wrapping around a corpus shorter than T * num_samples; with
    `random_windows`, a random window as in training), then builds the task with
    `np.random.default_rng((seed, i))`.

    Args:
        corpus_dir: a prepared corpus directory.
        tokenizer: the corpus's tokenizer (checked against the manifest).
        task: "single", "multi" or "multihop".
        seq_len: T.
        chunk_size: c = the model's S.
        seed: task seed.
        num_samples: number of samples; default num_tokens // T (at least 1).
        passkey_len: tokens per passkey; task default when None.
        random_windows: draw haystack windows at random instead of consecutively.
    """

    def __init__(
        self,
        corpus_dir: str | os.PathLike,
        tokenizer,
        *,
        task: str,
        seq_len: int,
        chunk_size: int,
        seed: int,
        num_samples: int | None = None,
        passkey_len: int | None = None,
        random_windows: bool = False,
    ):
        from gca_jax.data import manifest as manifest_lib
        from gca_jax.data.pipeline import TokenStream

        self.stream = TokenStream(corpus_dir)
        manifest_lib.check_tokenizer_matches(self.stream.manifest, tokenizer.identity)
        if task not in TASKS:
            raise ValueError(f"{task=} must be one of {TASKS}")
        if seq_len % chunk_size:
            raise ValueError(f"{seq_len=} must be a multiple of {chunk_size=} (docs/spec.md §6.1)")
        self.templates = NiahTemplates.from_tokenizer(tokenizer)
        self.task, self.seq_len, self.chunk_size, self.seed = task, seq_len, chunk_size, seed
        self.passkey_len, self.random_windows = passkey_len, random_windows
        self.num_samples = num_samples or max(1, self.stream.num_tokens // seq_len)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, index))
        if self.random_windows:
            start = int(rng.integers(self.stream.num_tokens))
        else:
            start = index * self.seq_len
        hay = self.stream.read(start, self.seq_len)
        return make_niah_sample(
            hay,
            task=self.task,
            templates=self.templates,
            chunk_size=self.chunk_size,
            rng=rng,
            passkey_len=self.passkey_len,
        )


def make_niah_dataset(corpus_dir, tokenizer, **kwargs) -> grain.MapDataset:
    """A grain MapDataset of NIAH samples; arguments as `NiahSource`. Batch with `.batch(B)`."""
    return grain.MapDataset.source(NiahSource(corpus_dir, tokenizer, **kwargs))
