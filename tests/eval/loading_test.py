"""Evaluation model loading: a checkpoint's params are restored exactly, and a checkpoint of
another model type (or architecture) is refused with a message naming both."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from gca_jax.config import load_config
from gca_jax.inference import Engine
from gca_jax.inference.loading import load_for_eval
from gca_jax.modeling import build_model


def _fake_checkpoint(root, cfg, seed):
    """The gca_jax.checkpoint layout: <root>/<step>/state (TrainState-like) and config."""
    model = build_model(cfg.model, rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    step_dir = os.path.join(root, "7")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(step_dir, "state"), {"params": params, "step": np.int32(7)})
    os.makedirs(os.path.join(step_dir, "config"))
    with open(os.path.join(step_dir, "config", "metadata"), "w") as f:
        json.dump(cfg.to_dict(), f)
    return model


def test_restores_params(tmp_path):
    cfg = load_config("configs/tiny.yaml")
    saved = _fake_checkpoint(str(tmp_path), cfg, seed=3)
    model, got_cfg = load_for_eval(None, ["model.kernel_backend=xla"], checkpoint=str(tmp_path))
    assert got_cfg.model == cfg.model
    for a, b in zip(jax.tree.leaves(nnx.state(saved)), jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_model_type(tmp_path):
    swa = load_config("configs/tiny.yaml", ["model.model_type=swa_lm"])
    _fake_checkpoint(str(tmp_path), swa, seed=0)
    with pytest.raises(ValueError, match="model_type='swa_lm'.*model_type='drt'"):
        load_for_eval("configs/tiny.yaml", checkpoint=str(tmp_path))
    model, _ = load_for_eval(None, checkpoint=str(tmp_path))  # its own config: loads, but
    with pytest.raises(ValueError, match="DRT models only"):  # the engine is DRT-only.
        Engine(model)


def test_checkpoint_of_another_architecture(tmp_path):
    _fake_checkpoint(str(tmp_path), load_config("configs/tiny.yaml", ["model.window=48"]), 0)
    with pytest.raises(ValueError, match="window: checkpoint=48 vs config=32"):
        load_for_eval("configs/tiny.yaml", checkpoint=str(tmp_path))
