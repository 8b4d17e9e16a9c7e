"""Confidence intervals shared by the evaluations (ROUGE, perplexity)."""

import numpy as np


def bootstrap_interval(
    values, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`.

    Examples are resampled with replacement `resamples` times with `np.random.default_rng(seed)`.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    idx = np.random.default_rng(seed).integers(values.size, size=(resamples, values.size))
    means = values[idx].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)
