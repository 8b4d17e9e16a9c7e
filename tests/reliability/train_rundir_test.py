"""The output directory under faults, through `python -m train` (docs/reliability.md, "Output
directory"): a second run on it, a read-only file system, a full disk.

Mounting a read-only or a tiny tmpfs needs root; those tests are skipped, saying so, where
``mount`` fails.
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from tests.reliability import train_helpers as h
from tests.reliability.conftest import REPO, run_train, train_cmd


@contextlib.contextmanager
def _tmpfs(path, options: str):
    """A tmpfs mounted at ``path`` with ``options`` for the block; skips the test if mount fails."""
    os.makedirs(path)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _lock_owner(run_dir) -> str:
    try:
        return (run_dir / "train.lock").read_text()
    except FileNotFoundError:
        return ""


def test_fresh_moves_the_old_run_aside_and_a_second_run_is_refused(cli_env, resumable, reference):
    run_dir = pathlib.Path(resumable)
    first = subprocess.Popen(
        train_cmd(run_dir, "--fresh"),
        cwd=REPO,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not _lock_owner(run_dir).startswith(f"{first.pid} ") and time.time() < deadline:
        assert first.poll() is None, first.stderr.read()[-3000:]
        time.sleep(0.05)

    second = run_train(cli_env, run_dir)

    h.assert_one_error(second, "is in use by another training run", f"pid {first.pid}")
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    (moved,) = os.listdir(run_dir / "previous")  # --fresh kept the old run
    h.assert_same_params(str(run_dir / "previous" / moved), reference, 12)
    h.assert_same_params(resumable, reference, 12)  # the new run: same seed, same weights
    h.assert_records_intact(resumable, 12)  # no rows of the refused run interleaved


def test_unwritable_output_dir(cli_env, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    proc = run_train(cli_env, not_a_dir)
    h.assert_one_error(proc, f"--output_dir {not_a_dir} is not writable")
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = run_train(cli_env, ro / "run")
        h.assert_one_error(proc, f"--output_dir {ro / 'run'} is not writable", "Read-only")


def test_full_disk_stops_training_and_keeps_the_last_checkpoint(cli_env, reference, tmp_path):
    # Room for one checkpoint and the run records, not for two checkpoints: the save at step 6
    # fails. The corpus lies outside, so only the run's own output fills the disk.
    ckpt_bytes = sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(os.path.join(reference, "checkpoints", "3"))
        for f in files
    )
    corpus = os.path.join(reference, "builtin_corpus", "train")
    size_kib = (ckpt_bytes * 3 // 2 + 256 * 1024) // 1024
    with _tmpfs(tmp_path / "small", f"size={size_kib}k") as small:
        run_dir = small / "run"
        proc = run_train(cli_env, run_dir, f"data.corpus_dir={corpus}", "train.keep_checkpoints=1")

        h.assert_one_error(
            proc,
            "checkpoint save of step 6",
            "no space left on the device",
            "the last complete checkpoint, step 3, is intact",
        )
        assert h.steps(str(run_dir)) == [3]
        assert os.listdir(run_dir / "checkpoints") == ["3"]  # the failed save's files removed
        assert max(h.metric_steps(str(run_dir))) < 9  # stopped at once, not at the next save
        assert len(set(h.metric_steps(str(run_dir)))) == len(h.metric_steps(str(run_dir)))
        # The last good checkpoint restores, digest and finiteness checked.
        saved = shutil.copytree(run_dir / "checkpoints" / "3", tmp_path / "kept")
    h.assert_restorable(str(saved))
