"""Evaluation model loading: a checkpoint's params are restored exactly, and a checkpoint of
another model type (or architecture) is refused with a message naming both; parameter restore
errors name the command-line flag that gave the path."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from gca_jax import checkpoint as ckpt_lib
from gca_jax.config import load_config
from gca_jax.inference import Engine
from gca_jax.inference.loading import load_for_eval
from gca_jax.modeling import build_model

SWA = ["model.model_type=swa_lm", "model.retrieval=null"]


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
    model, got_cfg, origin = load_for_eval(
        None, ["model.kernel_backend=xla"], checkpoint=str(tmp_path)
    )
    assert (origin.step, origin.checkpoint) == (7, os.path.join(str(tmp_path), "7"))
    assert got_cfg.model == cfg.model
    for a, b in zip(jax.tree.leaves(nnx.state(saved)), jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_model_type(tmp_path):
    swa = load_config("configs/tiny.yaml", SWA)
    _fake_checkpoint(str(tmp_path), swa, seed=0)
    with pytest.raises(ValueError, match="model_type='swa_lm'.*model_type='drt'"):
        load_for_eval("configs/tiny.yaml", checkpoint=str(tmp_path))
    model, cfg, _ = load_for_eval(None, checkpoint=str(tmp_path))  # its own config: loads, but
    assert cfg.model.retrieval is None
    with pytest.raises(ValueError, match="chunk-memory models"):
        Engine(model)  # DRT's engine; the sliding-window LM has its own


def test_checkpoint_of_another_architecture(tmp_path):
    _fake_checkpoint(
        str(tmp_path), load_config("configs/tiny.yaml", ["model.window=48", "top_k=2"]), 0
    )
    with pytest.raises(ValueError) as e:
        load_for_eval("configs/tiny.yaml", checkpoint=str(tmp_path))
    assert "model.window: checkpoint=48 vs config=32" in str(e.value)
    assert "model.retrieval.top_k: checkpoint=2 vs config=3" in str(e.value)


def _abstract_params(cfg):
    model = nnx.eval_shape(lambda: build_model(cfg.model, rngs=nnx.Rngs(0)))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
    )


@pytest.mark.parametrize("flag", ["--checkpoint", "--init_from"])
def test_restore_params_errors_name_the_flag(tmp_path, flag):
    cfg = load_config("configs/tiny.yaml")
    saved = _fake_checkpoint(str(tmp_path), cfg, seed=1)
    got = ckpt_lib.restore_params(str(tmp_path), _abstract_params(cfg), flag=flag)
    want = nnx.to_pure_dict(nnx.state(saved, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    step_dir = os.path.join(str(tmp_path), "7")
    with pytest.raises(FileNotFoundError, match=f"{flag} .*missing: no checkpoint found"):
        ckpt_lib.restore_params(str(tmp_path / "missing"), _abstract_params(cfg), flag=flag)
    wider = load_config("configs/tiny.yaml", ["model.mlp_hidden=96"])  # a saved shape differs
    with pytest.raises(ValueError, match=f"{flag} {step_dir}: the saved parameters do not fit"):
        ckpt_lib.restore_params(str(tmp_path), _abstract_params(wider), flag=flag)
    other = load_config("configs/tiny.yaml", SWA)  # parameters the checkpoint does not hold
    with pytest.raises(ValueError, match=f"{flag} {step_dir}: the checkpoint has no parameter"):
        ckpt_lib.restore_params(str(tmp_path), _abstract_params(other), flag=flag)
