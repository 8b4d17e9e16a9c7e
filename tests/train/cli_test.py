"""`python -m train` end to end in subprocesses: demo path, config errors, exact resume after
SIGKILL, and --init_from."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train.conftest import FAST, REPO, TINY


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One CPU device and a shared persistent compilation cache (identical runs compile once)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def _cmd(out_dir, *extra):
    return [sys.executable, "-m", "train", "--config", TINY, "--output_dir", str(out_dir), *FAST]


def _run(cmd, env, timeout=240):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _params(step_dir):
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(os.path.join(step_dir, "state"))
    return state["params"]


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


def test_bad_override_exits_nonzero_naming_the_key(env, tmp_path):
    proc = _run(_cmd(tmp_path) + ["train.stepz=3"], env, timeout=120)
    assert proc.returncode == 2
    assert "train.stepz" in proc.stderr and "'steps'" in proc.stderr
    proc = _run(_cmd(tmp_path) + ["train.lr=-1"], env, timeout=120)
    assert proc.returncode == 2 and "train.lr" in proc.stderr


def test_batch_that_the_mesh_cannot_split_is_a_config_error(env, tmp_path):
    env = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = _run(_cmd(tmp_path) + ["data.batch_size=6"], env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "data.batch_size=6" in proc.stderr and "4 batch shards" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exact_resume_after_sigkill(env, tmp_path):
    steps = ["train.steps=24", "train.save_every=6"]
    straight = tmp_path / "straight"
    proc = _run(_cmd(straight) + steps + ["--fresh"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: step 24" in proc.stdout and "loss" in proc.stdout

    killed = tmp_path / "killed"
    cmd = _cmd(killed) + steps
    child = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = killed / "checkpoints" / "6" / "state"
    deadline = time.time() + 240
    while not first.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "checkpoints" / "24").exists()

    proc = _run(cmd, env)  # the same command again: resumes from the newest checkpoint
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step" in proc.stderr
    a = _flat(_params(straight / "checkpoints" / "24"))
    b = _flat(_params(killed / "checkpoints" / "24"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # --init_from: weights of the finished run, fresh optimiser and step counter.
    tuned = tmp_path / "tuned"
    proc = _run(_cmd(tuned) + ["train.steps=2", "--init_from", str(straight)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"parameters restored from {straight / 'checkpoints' / '24'}" in proc.stderr
    assert "done: step 2" in proc.stdout
