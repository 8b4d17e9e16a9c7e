"""Faults through ``python -m train.prepare`` (docs/reliability.md, "Corpus preparation"):
binary and zero-document inputs, a smaller trained vocabulary, bad tokenizers, an unwritable
output directory and a full disk.

Each expected error must exit 2 with one ``error:`` line naming the flag or value, no traceback
(only with ``--debug``), and leave no complete corpus behind.
"""

import gzip
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = "The quick brown fox jumps over the lazy dog. " * 20


def prepare(*args, env=None) -> subprocess.CompletedProcess:
    """``python -m train.prepare args`` in the repository, text output captured."""
    return subprocess.run(
        [sys.executable, "-m", "train.prepare", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
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


def _config_lines(stdout: str) -> dict[str, str]:
    """The ``key: value`` lines the summary prints for the config."""
    rows = [line.strip().split(": ", 1) for line in stdout.splitlines() if line.startswith("  ")]
    return dict(rows)


@pytest.fixture
def binary_inputs(tmp_path):
    """A directory of binary files only: random bytes, NUL bytes (valid UTF-8), a gzip file."""
    root = tmp_path / "binary"
    root.mkdir()
    (root / "random.bin").write_bytes(bytes(range(256)) * 8)
    (root / "zeros.dat").write_bytes(b"\0" * 512)
    (root / "packed.gz").write_bytes(gzip.compress(TEXT.encode()))
    return root


@pytest.mark.parametrize("extra", [[], ["--train-tokenizer", "300"]], ids=["bytes", "trained"])
def test_zero_usable_documents_fail_and_leave_nothing(binary_inputs, tmp_path, extra):
    out = tmp_path / "corpus"
    proc = prepare("--format", "text", binary_inputs, "--out", out, *extra)
    assert_user_error(proc, "no usable document", "binary=1", "undecodable=2", str(out))
    assert not out.exists()  # no corpus, complete or not


def test_binary_files_among_text_are_counted_skips(binary_inputs, tmp_path):
    (binary_inputs / "story.txt").write_text(TEXT)
    out = tmp_path / "corpus"
    proc = prepare("--format", "text", binary_inputs, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_documents"] == 1
    assert manifest["skipped"] == {"binary": 1, "undecodable": 2}
    assert "'binary': 1" in proc.stdout and "'undecodable': 2" in proc.stdout


def test_the_summary_gives_the_vocabulary_and_the_config_lines(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(TEXT)
    out = tmp_path / "bytes"
    proc = prepare("--format", "text", tmp_path / "in", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vocabulary 259 ids (eot 256, pad 257, landmark 258)" in proc.stdout
    assert _config_lines(proc.stdout) == {
        "model.vocab_size": "259",
        "model.pad_id": "257",
        "model.landmark_id": "258",
        "data.tokenizer": "bytes",
        "data.corpus_dir": str(out),
    }
    # Far more ids asked for than the text has merges: said loudly, the lines use the real size.
    out = tmp_path / "bpe"
    proc = prepare("--format", "text", tmp_path / "in", "--out", out, "--train-tokenizer", 5000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tok = json.loads((out / "manifest.json").read_text())["tokenizer"]
    assert tok["vocab_size"] < 5000
    assert f"WARNING: --train-tokenizer 5000 gave only {tok['vocab_size']} ids" in proc.stdout
    lines = _config_lines(proc.stdout)
    assert lines["model.vocab_size"] == str(tok["vocab_size"])
    assert (lines["model.pad_id"], lines["model.landmark_id"]) == (
        str(tok["pad_id"]),
        str(tok["landmark_id"]),
    )
    assert lines["data.tokenizer"] == str(out / "tokenizer.json")


def test_bad_tokenizers_and_inputs_name_the_value(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(TEXT)
    out = tmp_path / "c"
    proc = prepare("--format", "text", tmp_path / "in", "--out", out, "--tokenizer", "/no/tok.json")
    assert_user_error(proc, "'/no/tok.json'", "tokenizer.json")
    proc = prepare("--format", "text", tmp_path / "in", "--out", out, "--tokenizer", tmp_path)
    assert_user_error(proc, f"{tmp_path}", "without tokenizer.json")
    proc = prepare("--format", "text", tmp_path / "nothing", "--out", out)
    assert_user_error(proc, f"{tmp_path / 'nothing'}", "does not exist")
    proc = prepare("--format", "text", tmp_path / "nothing", "--out", out, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # --debug: the traceback


def test_an_unwritable_output_directory(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(TEXT)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "corpus"
    proc = prepare("--format", "text", tmp_path / "in", "--out", out)
    assert_user_error(proc, f"out_dir='{out}'", "--out")


@pytest.mark.parametrize("victim", ["manifest.json.tmp", "shard-00000.array_record.tmp"])
def test_a_full_disk_is_one_line_and_a_rerun_resumes(tmp_path, victim):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(TEXT)
    out = tmp_path / "c"
    out.mkdir()
    os.symlink("/dev/full", out / victim)  # every write there fails with ENOSPC
    args = ["--format", "text", tmp_path / "in", "--out", out, "--workers", "1"]
    proc = prepare(*args)
    assert_user_error(proc, "no space left on the device", str(out))
    manifest = out / "manifest.json"
    assert not manifest.exists() or not json.loads(manifest.read_text())["complete"]
    os.remove(out / victim)  # space freed
    proc = prepare(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(manifest.read_text())["num_documents"] == 1
