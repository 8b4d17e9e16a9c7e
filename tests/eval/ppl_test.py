"""Perplexity eval: equals the model's own loss on each window; the CLI runs end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import ppl as ppl_cli
from gca_jax.inference import Engine
from gca_jax.inference import evaluation as ev


def test_perplexity_matches_model_loss(tiny_model):
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, 256, (2, 150)).astype(np.int32) for _ in range(2)]
    res = ev.perplexity(Engine(tiny_model, segment_chunks=5), windows)
    loss = jax.jit(lambda t: tiny_model.loss(t)[0])
    want = [float(loss(jnp.asarray(w[b : b + 1]))) for w in windows for b in (0, 1)]
    assert res["windows"] == 4 and res["tokens"] == 4 * 149
    assert res["mean_ce"] == pytest.approx(np.mean(want), rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(np.mean(want)), rel=1e-5)
    assert res["window_ce"] == pytest.approx(want, rel=1e-5)
    lo, hi = res["ppl_ci95"]
    assert math.exp(min(want)) <= lo < res["ppl"] < hi <= math.exp(max(want))


def test_cli(tmp_path, builtin_corpus):
    out = str(tmp_path / "ppl")
    argv = [
        "--random_init",
        "--config",
        "configs/tiny.yaml",
        "--lengths",
        "240",
        "--windows",
        "3",
        "--corpus",
        builtin_corpus,
        "--out",
        out,
    ]
    assert ppl_cli.main(argv) == 0
    (res,) = json.load(open(os.path.join(out, "ppl.json")))["results"]
    assert res["length"] == 240 and res["windows"] == 3
    assert res["ppl"] == pytest.approx(math.exp(res["mean_ce"]))
