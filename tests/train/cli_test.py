"""`python -m train` in subprocesses: config errors are one `error:` line with exit status 2.

Exact resume after SIGKILL, --init_from, --fresh and the other faults of a run are in
tests/reliability/train_*_test.py.
"""

import os
import subprocess
import sys

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


def _cmd(out_dir):
    return [sys.executable, "-m", "train", "--config", TINY, "--output_dir", str(out_dir), *FAST]


def _run(cmd, env, timeout=240):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_bad_override_exits_nonzero_naming_the_key(env, tmp_path):
    proc = _run(_cmd(tmp_path) + ["train.stepz=3"], env, timeout=120)
    assert proc.returncode == 2
    assert "train.stepz" in proc.stderr and "'steps'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _run(_cmd(tmp_path) + ["train.lr=-1"], env, timeout=120)
    assert proc.returncode == 2 and "train.lr" in proc.stderr
    proc = _run(_cmd(tmp_path) + ["train.lr=-1", "--debug"], env, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # --debug: the traceback too


def test_batch_that_the_mesh_cannot_split_is_a_config_error(env, tmp_path):
    env = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = _run(_cmd(tmp_path) + ["data.batch_size=6"], env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "data.batch_size=6" in proc.stderr and "4 batch shards" in proc.stderr
    assert "Traceback" not in proc.stderr
