"""Faults through the eval commands (docs/reliability.md, "Evaluation"): which model is scored,
damaged checkpoints, bad configs, corpora and tokenizers, unwritable or full outputs.

Each expected error must exit 2 with one ``error:`` line naming the flag or key, and no
traceback (only with ``--debug``). One tiny run with checkpoints 1 and 2 serves the module.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tiny.yaml")
PPL = ["--lengths", "120", "--windows", "1"]


def run_cli(env, module: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m module args`` in the repository, text output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line holding every needle, no traceback; returns the line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(cli_env, tmp_path_factory) -> str:
    """A trained tiny run: checkpoints 1 and 2, and its built-in validation corpus."""
    out = tmp_path_factory.mktemp("eval_run") / "run"
    proc = run_cli(
        cli_env,
        "train",
        "--config",
        TINY,
        "--output_dir",
        out,
        "data.seq_len=120",
        "data.batch_size=2",
        "train.steps=2",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.save_every=1",
        "train.keep_checkpoints=2",
        "train.eval_every=0",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out / "checkpoints")) == ["1", "2"]
    return str(out)


@pytest.fixture(scope="module")
def corpus(run_dir) -> str:
    """The byte-level validation corpus the run prepared."""
    return os.path.join(run_dir, "builtin_corpus", "validation")


def _damage(step_dir: str) -> None:
    """Flips 4 KiB in the middle of every array file of a checkpoint step."""
    for root, _, names in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) != "d":
            continue
        for name in names:
            path = os.path.join(root, name)
            data = bytearray(open(path, "rb").read())
            mid = len(data) // 2
            data[mid : mid + 4096] = bytes(b ^ 0xFF for b in data[mid : mid + 4096])
            open(path, "wb").write(bytes(data))


def test_the_loaded_step_is_named_on_the_console_and_in_the_json(
    cli_env, run_dir, corpus, tmp_path
):
    proc = run_cli(
        cli_env, "eval.ppl", "--checkpoint", run_dir, "--corpus", corpus, *PPL, "--out", tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_dir = os.path.join(run_dir, "checkpoints", "2")
    assert f"model: checkpoint step 2 ({step_dir})" in proc.stdout
    record = json.loads((tmp_path / "ppl.json").read_text())
    assert (record["checkpoint"], record["step"], record["random_init"]) == (step_dir, 2, False)


def test_no_checkpoint_is_an_error_unless_random_weights_are_asked_for(cli_env, tmp_path):
    proc = run_cli(cli_env, "eval.ppl", "--config", TINY, "--out", tmp_path)
    assert_user_error(proc, "--checkpoint", "--random_init")
    proc = run_cli(cli_env, "eval.generate", "--random_init", "--prompt", "x")
    assert_user_error(proc, "--random_init needs --config")


def test_a_missing_checkpoint_names_the_flag(cli_env, tmp_path):
    missing = tmp_path / "no_run"
    proc = run_cli(cli_env, "eval.passkey", "--checkpoint", missing, "--out", tmp_path)
    assert_user_error(proc, f"--checkpoint {missing}", "no checkpoint found")
    assert "--init_from" not in proc.stderr
    proc = run_cli(cli_env, "eval.passkey", "--checkpoint", missing, "--out", tmp_path, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # --debug: the traceback


def test_a_damaged_newest_step_names_it_and_the_intact_ones(cli_env, run_dir, corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _damage(run / "checkpoints" / "2")
    proc = run_cli(cli_env, "eval.ppl", "--checkpoint", run, "--corpus", corpus, *PPL, "--out", run)
    line = assert_user_error(proc, f"--checkpoint {run}/checkpoints/2", "damaged")
    assert f"--checkpoint {run}/checkpoints/1" in line  # the way out: the older step
    assert not (run / "ppl.json").exists()
    # Every checkpoint damaged: the older step too is refused, naming itself (here its saved
    # config is lost).
    os.remove(run / "checkpoints" / "1" / "config" / "metadata")
    proc = run_cli(
        cli_env, "eval.ppl", "--checkpoint", run / "checkpoints" / "1", *PPL, "--out", run
    )
    assert_user_error(proc, f"--checkpoint {run}/checkpoints/1", "saved config is unreadable")
    shutil.copytree(
        run_dir + "/checkpoints/1/config", run / "checkpoints" / "1" / "config", dirs_exist_ok=True
    )
    _damage(run / "checkpoints" / "1")
    proc = run_cli(
        cli_env, "eval.ppl", "--checkpoint", run / "checkpoints" / "1", *PPL, "--out", run
    )
    assert_user_error(proc, f"--checkpoint {run}/checkpoints/1", "damaged")


@pytest.mark.parametrize(
    "text, needle",
    [("model:\n  window: [32,\n", "malformed YAML"), ("", "is empty")],
    ids=["malformed", "empty"],
)
def test_a_bad_config_file_names_it(cli_env, run_dir, tmp_path, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    proc = run_cli(
        cli_env, "eval.ppl", "--checkpoint", run_dir, "--config", config, "--out", tmp_path
    )
    assert_user_error(proc, f"--config {config}", needle)


def test_corpus_and_tokenizer_problems_name_the_flag_or_key(cli_env, run_dir, corpus, tmp_path):
    from gca_jax.data import tokenizer

    base = ["--checkpoint", run_dir, "--out", tmp_path, "--lengths", "120", "--windows", "1"]
    proc = run_cli(cli_env, "eval.ppl", *base, "--corpus", tmp_path / "none")
    assert_user_error(proc, f"--corpus {tmp_path / 'none'}", "train.prepare")
    other = tmp_path / "other"  # a corpus whose manifest records another tokenizer
    shutil.copytree(corpus, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["vocab_size"] = 999
    (other / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli(cli_env, "eval.ppl", *base, "--corpus", other)
    assert_user_error(proc, f"--corpus {other}", "data.tokenizer='bytes'", "vocab_size")
    proc = run_cli(cli_env, "eval.ppl", *base, "--corpus", corpus, "data.tokenizer=/no/tok.json")
    assert_user_error(proc, "data.tokenizer='/no/tok.json'")
    bpe = tmp_path / "tokenizer.json"  # a tokenizer of another vocabulary than the model
    tokenizer.train_bpe(["some text to learn merges from"] * 4, vocab_size=300, out_path=bpe)
    proc = run_cli(cli_env, "eval.ppl", *base, "--corpus", corpus, f"data.tokenizer={bpe}")
    assert_user_error(proc, "model.vocab_size", "(259, 257, 258)")
    proc = run_cli(cli_env, "eval.ppl", *base, "--lengths", "1M", "--corpus", corpus)
    assert_user_error(proc, f"--corpus {corpus} is shorter than one window")


def test_unwritable_or_full_outputs(cli_env, run_dir, corpus, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli(cli_env, "eval.ppl", "--checkpoint", run_dir, "--out", blocker / "out")
    assert_user_error(proc, f"--out {blocker / 'out'}", "writable")
    # A full disk when the results are written: /dev/full behind the temporary file.
    out = tmp_path / "full"
    out.mkdir()
    os.symlink("/dev/full", out / "ppl.json.tmp")
    proc = run_cli(
        cli_env, "eval.ppl", "--checkpoint", run_dir, "--corpus", corpus, *PPL, "--out", out
    )
    assert_user_error(proc, "no space left on the device")
    assert os.listdir(out) == []  # neither a half-written ppl.json nor the temporary file


def test_a_directory_as_text_file(cli_env, run_dir, tmp_path):
    proc = run_cli(
        cli_env, "eval.inspect_retrieval", "--checkpoint", run_dir, "--text_file", tmp_path,
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert_user_error(proc, f"--text_file {tmp_path} is a directory")


def test_non_finite_scores_exit_nonzero(cli_env, corpus, tmp_path):
    # Weights of std 1e18 are finite, but attention scores overflow float32: NaN logits.
    huge = ["--random_init", "--config", TINY, "model.init_std=1e18", "--corpus", corpus]
    proc = run_cli(cli_env, "eval.ppl", *huge, *PPL, "--out", tmp_path / "ppl")
    assert "model: RANDOM weights" in proc.stdout
    assert_user_error(proc, "ppl is not finite", "cross-entropy nan")
    assert not (tmp_path / "ppl" / "ppl.json").exists()
    proc = run_cli(
        cli_env, "eval.passkey", *huge, "--lengths", "240", "--samples", "1",
        "--out", tmp_path / "pk",
    )  # fmt: skip
    assert_user_error(proc, "logits", "non-finite")


def test_plot_passkey_names_a_damaged_result(cli_env, tmp_path):
    (tmp_path / "passkey.json").write_text('{"summaries": [{"length": 4096}]')
    proc = run_cli(
        cli_env, "eval.plot_passkey", "--run", f"A={tmp_path}", "--out", tmp_path / "p.png"
    )
    assert_user_error(proc, f"--run 'A={tmp_path}'", "not a passkey.json")
