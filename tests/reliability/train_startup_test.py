"""Mistakes caught before a run writes anything, and config drift on resume, through
`python -m train` (docs/reliability.md, "Startup checks" and "Config drift").

Each is one `error:` line naming the flag or key, exit status 2, no traceback, and no output
directory created (or, on resume, nothing in it changed).
"""

import json
import os

import pytest

from tests.reliability import train_helpers as h
from tests.reliability.conftest import run_train


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["is empty", "full default run"]),
        ("# only a comment\n", ["is empty"]),
        ("model:\n  vocab_size: [259\n", ["malformed YAML at line 3, column 1"]),
        ("model:\n\tvocab_size: 259\n", ["malformed YAML at line 2, column 1"]),
    ],
    ids=["empty", "comment-only", "unclosed-list", "tab-indent"],
)
def test_bad_config_file(cli_env, tmp_path, text, needles):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    proc = run_train(cli_env, out, config=str(config))
    h.assert_one_error(proc, f"--config {config}", *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["model.vocab_size=258", "model.pad_id=256", "model.landmark_id=257"],
            ["data.tokenizer='bytes' has 259 ids", "model.vocab_size=258", "at least 259"],
        ),
        (["model.landmark_id=200"], ["landmark_id 258", "model.landmark_id=200"]),
        (["data.tokenizer=/no/such/tokenizer.json"], ["data.tokenizer='/no/such/tokenizer.json'"]),
    ],
    ids=["vocab-too-small", "landmark-id", "tokenizer-path"],
)
def test_tokenizer_that_does_not_fit_the_model(cli_env, tmp_path, overrides, needles):
    out = tmp_path / "out"
    proc = run_train(cli_env, out, *overrides)
    h.assert_one_error(proc, *needles)
    assert not out.exists()


def test_unusable_corpus_and_missing_init_from(cli_env, reference, tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / "partial"
    partial.mkdir()
    manifest = json.load(open(os.path.join(reference, "builtin_corpus", "train", "manifest.json")))
    (partial / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    proc = run_train(cli_env, out, f"data.corpus_dir={partial}")
    h.assert_one_error(proc, f"data.corpus_dir='{partial}'", "only partly prepared")
    proc = run_train(cli_env, out, "--init_from", str(tmp_path / "nothing"))
    h.assert_one_error(proc, "--init_from", "no checkpoint found")
    assert not out.exists()


def test_model_change_on_resume_is_refused_naming_the_keys(cli_env, resumable):
    proc = run_train(cli_env, resumable, "model.mlp_hidden=96", "model.retrieval.top_k=2")
    h.assert_one_error(
        proc,
        "model.mlp_hidden: checkpoint=128 vs now=96",
        "model.retrieval.top_k: checkpoint=3 vs now=2",
        "--output_dir",
        "--init_from",
    )
    assert "damaged" not in proc.stderr
    assert h.steps(resumable) == [3, 6, 9, 12]
    assert not os.path.exists(os.path.join(resumable, "damaged_checkpoints"))
    proc = run_train(cli_env, resumable, "data.seq_len=60")  # the data position's meaning
    h.assert_one_error(proc, "data.seq_len: checkpoint=120 vs now=60")


def test_optimizer_change_on_resume_is_a_warning(cli_env, resumable):
    proc = run_train(cli_env, resumable, "train.lr=1e-3", "train.log_every=2")
    h.assert_ok(proc)
    warning = [line for line in proc.stderr.splitlines() if "changed settings" in line]
    assert len(warning) == 1 and "train.lr: checkpoint=0.003 vs now=0.001" in warning[0]
    assert "log_every" not in warning[0]  # bookkeeping keys change silently
    assert "nothing left to train" in proc.stdout


def test_init_from_takes_the_weights_of_another_run(cli_env, reference, tmp_path):
    proc = run_train(cli_env, tmp_path / "tuned", "--init_from", reference)
    h.assert_ok(proc)
    assert f"parameters restored from {reference}/checkpoints/12" in proc.stderr
    assert "done: step 12" in proc.stdout  # its own step counter and optimiser
