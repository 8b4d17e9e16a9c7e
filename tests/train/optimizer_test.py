"""Schedule values: linear warmup from 0, cosine to min_lr, flat after the end."""

import math

import numpy as np

from gca_jax.config import TrainConfig
from gca_jax.training.optimizer import lr_schedule


def test_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(steps=110, lr=2e-3, min_lr=4e-4, warmup_steps=10)
    sched = lr_schedule(cfg)
    got = np.array([float(sched(t)) for t in (0, 5, 10, 60, 110, 200)])
    mid = 4e-4 + (2e-3 - 4e-4) * 0.5 * (1 + math.cos(math.pi * 0.5))
    want = np.array([0.0, 1e-3, 2e-3, mid, 4e-4, 4e-4])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_min_lr_zero_matches_original_decay_to_zero():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=0.0, warmup_steps=0)
    sched = lr_schedule(cfg)
    np.testing.assert_allclose(float(sched(0)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(sched(100)), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        float(sched(25)), 1e-3 * 0.5 * (1 + math.cos(math.pi / 4)), rtol=1e-6
    )
