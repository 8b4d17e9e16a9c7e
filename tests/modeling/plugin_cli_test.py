"""Adding a model is one file: a plugin model type runs through the command-line tools.

``tests/modeling/dummy_lm.py`` registers ``dummy_bag``; ``python -m train``, ``eval.ppl`` and
``eval.passkey`` load it with ``--plugin`` and train, score and evaluate it from the registry
alone (FLOPs, statistics and the scorer come from its class). A capability it lacks
(incremental decoding) is an error naming the model and the capability.
"""

import json
import os
import subprocess
import sys

import pytest

from gca_jax.modeling.registry import MODELS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = ["--plugin", "tests.modeling.dummy_lm"]
CONFIG = """\
model:
  model_type: dummy_bag
  vocab_size: 259
  pad_id: 257
  landmark_id: 258
  hidden_size: 32
  num_heads: 4
  num_kv_heads: 4
  mlp_hidden: 64
  num_layers: 1
  kernel_backend: xla
  remat: none
data:
  tokenizer: bytes
  seq_len: 64
  batch_size: 4
  niah_chunk_len: 16
train:
  steps: 4
  warmup_steps: 1
  log_every: 1
  save_every: 4
  eval_every: 0
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs a module of this repository in a subprocess on one CPU device."""
    cache = tmp_path_factory.mktemp("jax_cache")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
    }

    def _run(*args):
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return _run


def test_plugin_model_trains_and_evaluates_from_the_command_line(run, tmp_path):
    config = tmp_path / "dummy.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    proc = run("train", "--config", str(config), "--output_dir", str(out), *PLUGIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: step 4" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all("bag_norm" in r for r in train_rows)  # its own statistics

    ppl_out = tmp_path / "ppl"
    proc = run(
        "eval.ppl", "--checkpoint", str(out), "--lengths", "64", "--windows", "2",
        "--out", str(ppl_out), *PLUGIN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ppl = json.loads((ppl_out / "ppl.json").read_text())["results"][0]
    assert ppl["windows"] == 2 and 1.0 < ppl["ppl"] < 259 * 2

    pk_out = tmp_path / "passkey"
    proc = run(
        "eval.passkey", "--checkpoint", str(out), "--lengths", "512", "--samples", "2",
        "--out", str(pk_out), *PLUGIN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((pk_out / "passkey.json").read_text())["summaries"][0]
    assert summary["length"] == 512 and summary["samples"] == 2

    proc = run("eval.generate", "--checkpoint", str(out), "--prompt", "hi", *PLUGIN)
    assert proc.returncode == 2
    assert "model_type='dummy_bag'" in proc.stderr and "incremental decoding" in proc.stderr

    proc = run("eval.ppl", "--checkpoint", str(out), "--offload", "--out", str(ppl_out), *PLUGIN)
    assert proc.returncode == 2 and "segmented long-context prefill" in proc.stderr


def test_unknown_model_type_and_missing_plugin_are_one_line_errors(run, tmp_path):
    config = tmp_path / "dummy.yaml"
    config.write_text(CONFIG)
    proc = run("train", "--config", str(config), "--output_dir", str(tmp_path / "x"))
    assert proc.returncode == 2
    registered = sorted(k for k, cls in MODELS.items() if cls.__module__.startswith("gca_jax."))
    assert f"model.model_type='dummy_bag': must be one of {registered}" in proc.stderr
    proc = run("train", "--config", str(config), "--plugin", "tests.no_such_module")
    assert proc.returncode == 2 and "--plugin tests.no_such_module" in proc.stderr
