"""ROUGE of generated summaries, two ways, each with a bootstrap 95% interval (docs/spec.md §8).

- **text**: the `rouge-score` package on detokenized text: ROUGE-1, ROUGE-2, ROUGE-L and
  ROUGE-Lsum F-measures with its Porter stemmer (`use_stemmer=True`). ROUGE-Lsum splits
  summaries on newlines only: nltk's sentence splitter (which needs a data download) stays off.
  The usual modern report.
- **tokens**: the original's variant. Prediction and reference become the space-joined strings of
  their GPT-2 token pieces ("ĠThe Ġcat"), scored as the `rouge` 1.0.1 package does: sentences are
  split on ".", words on whitespace, no lowercasing or stemming; ROUGE-N counts *distinct*
  n-grams (precision = shared / distinct predicted, recall = shared / distinct reference);
  ROUGE-L is summary-level: the union over reference sentences of the words of the LCS with each
  predicted sentence, divided by the distinct predicted (precision) and reference (recall)
  words; F = 2PR / (P + R + 1e-8). Written here from that description, so it needs no package.
  The original raises on an empty prediction; here it scores 0.

Scores are per example, F-measure x 100; `summarize` gives the mean and a percentile bootstrap
interval of the mean over examples (fixed seed, 1000 resamples).
"""

from __future__ import annotations

import numpy as np

from gca_jax.inference.stats import bootstrap_interval

TEXT_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOKEN_KEYS = ("rouge1", "rouge2", "rougeL")


def text_scores(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per-example `rouge-score` F-measures x 100 on text, one array per key of `TEXT_KEYS`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(TEXT_KEYS), use_stemmer=True, split_summaries=False)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {k: np.asarray([100.0 * r[k].fmeasure for r in rows], np.float64) for k in TEXT_KEYS}


def _sentences(text: str) -> list[list[str]]:
    """`rouge` 1.0.1's sentences: split on ".", then on whitespace; empty ones dropped."""
    return [words for part in text.split(".") if (words := part.split())]


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _f(overlap: int, predicted: int, reference: int) -> float:
    p = overlap / predicted if predicted else 0.0
    r = overlap / reference if reference else 0.0
    return 2.0 * p * r / (p + r + 1e-8)


def _lcs(a: list[str], b: list[str]) -> list[str]:
    """One longest common subsequence of `a` and `b` (dynamic programming, then backtrack)."""
    table = np.zeros((len(a) + 1, len(b) + 1), np.int32)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1, j + 1] = (
                table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
            )
    out, i, j = [], len(a), len(b)
    while i and j:
        if a[i - 1] == b[j - 1]:
            out.append(a[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def token_rouge(prediction: str, reference: str) -> dict[str, float]:
    """The `rouge` 1.0.1 F-measures x 100 of one space-joined token-string pair (module doc)."""
    pred, ref = _sentences(prediction), _sentences(reference)
    pred_words = [w for s in pred for w in s]
    ref_words = [w for s in ref for w in s]
    out = {}
    for n in (1, 2):
        p, r = _ngrams(pred_words, n), _ngrams(ref_words, n)
        out[f"rouge{n}"] = 100.0 * _f(len(p & r), len(p), len(r))
    union: set[str] = set()
    for ref_sentence in ref:
        for pred_sentence in pred:
            union |= set(_lcs(ref_sentence, pred_sentence))
    out["rougeL"] = 100.0 * _f(len(union), len(set(pred_words)), len(set(ref_words)))
    return out


def token_string(tokenizer, ids) -> str:
    """The space-joined token pieces of `ids` (the original's ROUGE input)."""
    return " ".join(tokenizer.token_strings(ids))


def token_scores(tokenizer, predictions, references) -> dict[str, np.ndarray]:
    """Per-example original-variant scores of id sequences, one array per key of `TOKEN_KEYS`."""
    rows = [
        token_rouge(token_string(tokenizer, p), token_string(tokenizer, r))
        for p, r in zip(predictions, references, strict=True)
    ]
    return {k: np.asarray([r[k] for r in rows], np.float64) for k in TOKEN_KEYS}


def summarize(scores: dict[str, np.ndarray], **bootstrap) -> dict[str, dict[str, float]]:
    """{key: {"mean", "lo", "hi"}} of per-example scores."""
    out = {}
    for key, values in scores.items():
        lo, hi = bootstrap_interval(values, **bootstrap)
        out[key] = {"mean": float(np.mean(values)), "lo": lo, "hi": hi}
    return out
