"""Long-context evaluation on the engine: perplexity and passkey (docs/spec.md §6.7, §6.5).

Both run the segmented prefill, so device memory stays bounded at any length, and ask the head
only for what they score: cross-entropy sums (perplexity) or the logits of one position
(passkey). A non-finite score (NaN or infinite cross-entropy, perplexity or logits) is never
reported as a result: it raises ``NonFiniteResultError`` (docs/inference.md).
"""

import json
import logging
import math
import os
from collections.abc import Callable, Iterable

import numpy as np

from gca_jax.cli import UserError
from gca_jax.inference.engine import Engine
from gca_jax.inference.stats import bootstrap_interval

_log = logging.getLogger(__name__)

_MAX_EXP = 709.0  # math.exp overflows above ~709.78


class NonFiniteResultError(UserError):
    """The model produced NaN or infinite scores; the message says where and what to check."""


_NON_FINITE_HINT = (
    "the model's outputs overflowed (checkpoint weights are checked finite on load): evaluate "
    "another checkpoint step, or run with model.dtype=float32"
)


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def perplexity(
    engine: Engine,
    windows: Iterable[np.ndarray],
    *,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Next-token cross-entropy over independent windows (each from an empty memory).

    Args:
      engine: the model's engine.
      windows: batches (B, T) of consecutive corpus windows.
      progress: forwarded to ``Engine.prefill``.

    Returns:
      ``{"windows", "tokens", "mean_ce", "ppl", "token_ppl", "ppl_ci95", "window_ce"}``:
      ``mean_ce`` is the mean over windows of each window's mean CE in nats, the quantity the
      original prints as "perplexity" (docs/spec.md §6.7, §9.18); ``ppl = exp(mean_ce)``;
      ``token_ppl`` weights tokens; ``ppl_ci95`` is exp of a percentile bootstrap interval of
      ``mean_ce`` over windows (1000 resamples, seed 0); ``window_ce`` lists each window's CE.

    Raises:
      ValueError: no windows (the corpus is shorter than one window).
      NonFiniteResultError: a window's cross-entropy, or a perplexity, is NaN or infinite.
    """
    per_window, total, count = [], 0.0, 0
    for batch in windows:
        out = engine.prefill(np.asarray(batch), with_ce=True, progress=progress)
        ce_B = out.ce_sum / np.maximum(out.ce_count, 1)
        finite_B = np.isfinite(ce_B)
        if not finite_B.all():
            b = int(np.argmin(finite_B))
            raise NonFiniteResultError(
                f"ppl is not finite: window {len(per_window) + b} (T={np.shape(batch)[-1]}) has "
                f"cross-entropy {float(ce_B[b])}: {_NON_FINITE_HINT}"
            )
        per_window.extend(ce_B.tolist())
        total += float(out.ce_sum.sum())
        count += int(out.ce_count.sum())
    if not per_window:
        raise ValueError("no evaluation windows: the corpus is shorter than one window")
    mean_ce, token_ce = float(np.mean(per_window)), total / max(count, 1)
    if max(mean_ce, token_ce) > _MAX_EXP:
        raise NonFiniteResultError(
            f"ppl is inf (mean CE {mean_ce:.1f} nats over {len(per_window)} windows, "
            f"T={np.shape(batch)[-1]}): {_NON_FINITE_HINT}"
        )
    return {
        "windows": len(per_window),
        "tokens": count,
        "mean_ce": mean_ce,
        "ppl": math.exp(mean_ce),
        "token_ppl": math.exp(token_ce),
        "ppl_ci95": [math.exp(v) for v in bootstrap_interval(per_window)],
        "window_ce": per_window,
    }


def passkey_query(sample: dict, *, neutral_id: int) -> tuple[np.ndarray, int, int]:
    """The passkey scoring rule (docs/spec.md §6.5), shared by ``eval.passkey`` and training.

    The answer token's input is replaced by ``neutral_id`` (as the original, against leakage);
    the sample is a hit iff the argmax of the logits at ``final_pos - 1`` is the true token at
    ``final_pos``.

    Args:
      sample: ``{"tokens": (T,), "final_pos": int, ...}`` from ``gca_jax.data.niah``.
      neutral_id: token written at final_pos.

    Returns:
      (tokens (T,) int32 to run, position whose logits are scored, target token).

    Raises:
      ValueError: final_pos outside [1, T).
    """
    tokens = np.array(sample["tokens"], np.int32)
    pos = int(sample["final_pos"])
    if not 1 <= pos < tokens.shape[0]:
        raise ValueError(f"final_pos={pos} must be in [1, T={tokens.shape[0]})")
    target = int(tokens[pos])
    tokens[pos] = neutral_id
    return tokens, pos - 1, target


def passkey_record(sample: dict, predicted: int, target: int) -> dict:
    """``{"hit", "predicted", "target", "final_pos", "depth"}`` of one scored sample."""
    return {
        "hit": int(predicted) == int(target),
        "predicted": int(predicted),
        "target": int(target),
        "final_pos": int(sample["final_pos"]),
        "depth": float(sample.get("depth", float("nan"))),
    }


def score_passkey_sample(
    engine: Engine,
    sample: dict,
    *,
    neutral_id: int,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """One NIAH sample scored by ``passkey_query``'s rule with the engine's prefill.

    Args:
      engine: the model's scorer (``make_scorer``).
      sample: ``{"tokens": (T,), "final_pos": int, ...}`` from ``gca_jax.data.niah``.
      neutral_id: token written at final_pos.
      progress: forwarded to ``prefill``.

    Returns:
      ``passkey_record`` of the sample.

    Raises:
      NonFiniteResultError: the scored logits hold NaN or infinite values (their argmax would be
        meaningless).
    """
    tokens, pos, target = passkey_query(sample, neutral_id=neutral_id)
    out = engine.prefill(tokens.reshape(1, -1), logits_at=[pos], progress=progress)
    logits_V = np.asarray(out.logits[0, 0])
    if not np.all(np.isfinite(logits_V)):
        raise NonFiniteResultError(
            f"the logits at position {pos} of a T={tokens.shape[0]} sample hold "
            f"{int(np.sum(~np.isfinite(logits_V)))} non-finite values: {_NON_FINITE_HINT}"
        )
    return passkey_record(sample, int(np.argmax(logits_V)), target)


def score_passkey_samples(
    engine: Engine, source, num: int, *, neutral_id: int, progress=None
) -> list[dict]:
    """``score_passkey_sample`` over ``source[0..num)``, e.g. a ``niah.NiahSource``."""
    return [
        score_passkey_sample(engine, source[i], neutral_id=neutral_id, progress=progress)
        for i in range(num)
    ]


def passkey_summary(records: list[dict], length: int) -> dict:
    """Accuracy and its 95% Wilson interval over scored samples of one context length."""
    hits, n = sum(r["hit"] for r in records), len(records)
    lo, hi = wilson_interval(hits, n)
    return {
        "length": length,
        "samples": n,
        "hits": hits,
        "accuracy": hits / n if n else float("nan"),
        "ci95": [lo, hi],
    }


def write_json(path: str, obj) -> None:
    """Writes ``obj`` as indented JSON, atomically (a reader never sees half a file).

    Raises:
      OSError: the file cannot be written (e.g. a full disk); ``path`` is left as it was and no
        temporary file stays behind.
    """
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def plot_passkey(summaries: list[dict], path: str, *, title: str) -> None:
    """PNG of accuracy vs context length (log x) with 95% Wilson intervals."""
    plot_passkey_curves({"": summaries}, path, title=title)


def plot_passkey_curves(series: dict[str, list[dict]], path: str, *, title: str) -> None:
    """One PNG with a curve per label: accuracy vs context length, 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, summaries in series.items():
        x = [s["length"] for s in summaries]
        y = [s["accuracy"] for s in summaries]
        lo = [s["accuracy"] - s["ci95"][0] for s in summaries]
        hi = [s["ci95"][1] - s["accuracy"] for s in summaries]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label or None)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(series):  # a legend only when some curve has a label
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_length(text: str) -> int:
    """'4k' -> 4096, '16M' -> 16777216, '5000' -> 5000 (k = 2^10, M = 2^20).

    Raises:
      ValueError: not a positive count.
    """
    t = text.strip()
    scale = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20}.get(t[-1:], 1)
    digits = t[:-1] if scale > 1 else t
    if not digits.isdigit() or int(digits) == 0:
        raise ValueError(f"length {text!r} must be a positive count like 4096, 4k or 16M")
    return int(digits) * scale
