"""Passkey scoring (docs/spec.md §6.5): 100% where the answer is certain, chance on a random model,
Wilson intervals, and the CLI end to end (JSON, plot, tokenizer mismatch)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import passkey as passkey_cli
from gca_jax.inference import Engine
from gca_jax.inference import evaluation as ev

T = 15 * 16


def test_wilson_interval():
    lo, hi = ev.wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = ev.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert ev.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert ev.wilson_interval(0, 0) == (0.0, 1.0)


def test_parse_length():
    assert [ev.parse_length(x) for x in ("4k", "16M", "5000")] == [4096, 1 << 24, 5000]
    with pytest.raises(ValueError, match="positive count"):
        ev.parse_length("4x")


@pytest.mark.parametrize("offload", [False, True])
def test_certain_answer_scores_100_percent(tiny_model, offload):
    """The answer is what the model predicts at final_pos - 1, so every sample must hit,
    through segments, cross-segment retrieval, the neutral answer input and offload."""
    pad = tiny_model.cfg.pad_id
    rng = np.random.default_rng(0)
    logits_fn = jax.jit(lambda t: tiny_model.logits(t))
    engine = Engine(tiny_model, segment_chunks=8, offload=offload)
    records = []
    for _ in range(4):
        tokens = rng.integers(0, 256, T).astype(np.int32)
        pos = int(rng.integers(T - 40, T))
        tokens[pos] = pad
        tokens[pos] = int(np.argmax(np.asarray(logits_fn(jnp.asarray(tokens[None])))[0, pos - 1]))
        records.append(
            ev.score_passkey_sample(engine, {"tokens": tokens, "final_pos": pos}, neutral_id=pad)
        )
    summary = ev.passkey_summary(records, T)
    assert summary["accuracy"] == 1.0 and summary["hits"] == 4


def test_random_model_is_at_chance(tiny_model, builtin_corpus):
    from gca_jax.data import load_tokenizer
    from gca_jax.data.niah import NiahSource

    tok = load_tokenizer("bytes")
    source = NiahSource(
        builtin_corpus, tok, task="multi", seq_len=T * 3, chunk_size=15, seed=0, num_samples=12
    )
    engine = Engine(tiny_model, segment_chunks=60)
    records = [ev.score_passkey_sample(engine, source[i], neutral_id=tok.pad_id) for i in range(12)]
    # Chance is ~1/256 per sample for random byte passkeys.
    assert ev.passkey_summary(records, T * 3)["hits"] <= 2


def test_cli_writes_json_and_plot(tmp_path, builtin_corpus):
    out = str(tmp_path / "pk")
    argv = [
        "--random_init",
        "--config",
        "configs/tiny.yaml",
        "--task",
        "multi",
        "--lengths",
        "700,1k",
        "--samples",
        "3,2",  # one count per length
        "--segment_chunks",
        "70",
        "--corpus",
        builtin_corpus,
        "--out",
        out,
        "model.dtype=float32",
    ]
    assert passkey_cli.main(argv) == 0
    result = json.load(open(os.path.join(out, "passkey.json")))
    assert [s["length"] for s in result["summaries"]] == [690, 1020]
    assert [s["samples"] for s in result["summaries"]] == [3, 2]
    assert all(0 <= s["ci95"][0] <= s["ci95"][1] <= 1 for s in result["summaries"])
    assert os.path.getsize(os.path.join(out, "passkey.png")) > 0


def test_cli_rejects_corpus_of_another_tokenizer(tmp_path, builtin_corpus, capsys):
    import shutil

    corpus = str(tmp_path / "other")
    shutil.copytree(builtin_corpus, corpus)
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    manifest["tokenizer"]["vocab_size"] = 999
    json.dump(manifest, open(os.path.join(corpus, "manifest.json"), "w"))
    argv = [
        "--random_init",
        "--config",
        "configs/tiny.yaml",
        "--lengths",
        "1k",
        "--samples",
        "1",
        "--corpus",
        corpus,
        "--out",
        str(tmp_path / "o"),
    ]
    assert passkey_cli.main(argv) == 2
    assert "does not match the checkpoint/config tokenizer" in capsys.readouterr().err


def test_in_training_passkey_scores_a_sample_like_eval_passkey(builtin_corpus, monkeypatch):
    """The periodic passkey eval (one full forward, jitted) and eval.passkey's scorer (segmented
    prefill) build the same samples, predict the same token and apply the same rule."""
    from gca_jax import sharding as shard_lib
    from gca_jax.config import MeshConfig, load_config
    from gca_jax.data import load_tokenizer
    from gca_jax.data.niah import NiahSource
    from gca_jax.inference import make_scorer
    from gca_jax.training import evaluation as train_eval
    from gca_jax.training import init_state, make_optimizer

    cfg = load_config(
        "configs/tiny.yaml",
        ["model.dtype=float32", "eval.batches=0", "eval.passkey_samples=2", "eval.passkey_len=480"],
    )
    mesh = shard_lib.make_mesh(MeshConfig(data=1), jax.devices()[:1])
    mdef, state, shardings = init_state(cfg.model, 0, make_optimizer(cfg.train), mesh)
    evaluator = train_eval.Evaluator(cfg, mdef, shardings.params, mesh, builtin_corpus)
    in_training = []
    record = train_eval.passkey_record
    monkeypatch.setattr(
        train_eval, "passkey_record", lambda *a: in_training.append(record(*a)) or in_training[-1]
    )
    acc = evaluator.passkey(state.params)["passkey_acc"]

    tok = load_tokenizer(cfg.data.tokenizer)
    source = NiahSource(
        builtin_corpus, tok, task="single", seq_len=480, chunk_size=15, seed=cfg.data.seed,
        num_samples=2,
    )  # fmt: skip
    scorer = make_scorer(mdef.merge(state.params), segment_chunks=32)  # one segment: one compile
    standalone = ev.score_passkey_samples(scorer, source, 2, neutral_id=tok.pad_id)
    fields = lambda rs: [(r["predicted"], r["target"], r["final_pos"], r["hit"]) for r in rs]
    assert fields(in_training) == fields(standalone)
    assert acc == ev.passkey_summary(standalone, 480)["accuracy"]
