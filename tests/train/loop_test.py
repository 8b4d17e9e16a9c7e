"""The training loop in-process on 8 fake devices: loss falls on repetitive text, metrics are
written, a damaged latest checkpoint is detected and training falls back to the previous one."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from gca_jax.modeling import stat_names
from gca_jax.training import RunOptions, Trainer
from tests.train.conftest import tiny_config

STEPS = 30
RET_STATS = ("ret_top_weight", "ret_entropy", "ret_distance")


def _cfg(corpus):
    return tiny_config(
        f"data.corpus_dir={corpus}",
        f"data.eval_corpus_dir={corpus}",
        f"train.steps={STEPS}",
        "train.save_every=15",
        "train.log_every=5",
        "train.warmup_steps=3",
        "train.eval_every=15",
        "eval.batches=1",
        "eval.passkey_samples=1",
        "eval.passkey_len=600",
    )


@pytest.fixture(scope="module")
def run(repetitive_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    result = Trainer(_cfg(repetitive_corpus), RunOptions(output_dir=out, fresh=True)).run()
    params = jax.tree.map(np.asarray, result.state.params)
    return out, params, result


def test_loss_falls_on_repetitive_text(run, repetitive_corpus):
    out, _, result = run
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(5, STEPS + 1, 5))
    assert train[-1]["loss"] < 0.6 * train[0]["loss"], [r["loss"] for r in train]
    for key in ("ppl", "lr", "grad_norm", "tokens_per_s", "skipped"):
        assert key in train[-1], key
    # Exactly the model's own statistics: per group, no cross-group means.
    names = stat_names(_cfg(repetitive_corpus).model)
    assert names == tuple(f"{k}_g{g}" for g in (0, 1) for k in RET_STATS)
    assert {k for k in train[-1] if k.startswith("ret_")} == set(names)
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [15, 30] and evals[1]["loss"] < evals[0]["loss"]
    assert 0.0 <= evals[1]["passkey_acc"] <= 1.0
    assert os.path.isdir(os.path.join(out, "best")) and os.listdir(os.path.join(out, "tensorboard"))
    assert result.eval_metrics["ppl"] == pytest.approx(np.exp(evals[1]["loss"]))


def test_damaged_latest_checkpoint_falls_back(run, repetitive_corpus, caplog):
    out, params, _ = run
    ckpt = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpt)) == ["15", "30"]
    for root, _, files in os.walk(os.path.join(ckpt, "30", "state")):
        for name in files:  # flip bytes in the middle of every data file
            path = os.path.join(root, name)
            if os.sep + "d" + os.sep in path:
                data = bytearray(open(path, "rb").read())
                data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
                open(path, "wb").write(bytes(data))
    with caplog.at_level(logging.WARNING, logger="gca_jax.checkpoint"):
        result = Trainer(_cfg(repetitive_corpus), RunOptions(output_dir=out)).run()
    assert "checkpoint at step 30" in caplog.text and "falling back to step 15" in caplog.text
    assert os.listdir(os.path.join(out, "damaged_checkpoints"))
    # Resumed from 15 with the saved data position: the same final weights, bit for bit.
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_init_from_restores_weights_only(run, repetitive_corpus):
    from gca_jax import checkpoint as ckpt_lib
    from gca_jax import sharding as shard_lib
    from gca_jax.training import abstract_state, make_optimizer

    out, params, _ = run
    cfg = _cfg(repetitive_corpus)
    mesh = shard_lib.make_mesh(cfg.mesh)
    _, abstract, _ = abstract_state(cfg.model, cfg.train.seed, make_optimizer(cfg.train), mesh)
    # A run directory: its latest step.
    restored = ckpt_lib.restore_params(out, abstract.params, flag="--init_from")
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    with pytest.raises(FileNotFoundError, match="--init_from .*missing: no checkpoint"):
        ckpt_lib.restore_params(os.path.join(out, "missing"), abstract.params, flag="--init_from")


def test_sigterm_saves_where_it_stops_and_resumes_exactly(run, repetitive_corpus, tmp_path):
    import signal

    _, params, _ = run
    out = str(tmp_path)

    def preempt(step, _scalars):
        if step == 7:  # between the step-15 saves: only the SIGTERM checkpoint can hold it
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = Trainer(_cfg(repetitive_corpus), RunOptions(output_dir=out, fresh=True)).run(preempt)
    step = int(stopped.state.step)
    assert 7 < step < 15, step  # stops after the step in flight, well before the end
    assert os.listdir(os.path.join(out, "checkpoints")) == [str(step)]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    resumed = Trainer(_cfg(repetitive_corpus), RunOptions(output_dir=out)).run()
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_niah_mix_with_weighted_answers_trains(repetitive_corpus, tmp_path):
    cfg = tiny_config(
        f"data.corpus_dir={repetitive_corpus}",
        "data.seq_len=240",
        "data.niah_fraction=0.5",
        "data.answer_weight=30",
        "train.steps=2",
    )
    out = str(tmp_path)
    Trainer(cfg, RunOptions(output_dir=out, fresh=True)).run()
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["skipped"] == 0 for r in train)
