"""Fixtures of the fault-injection suite: a CLI environment and an uninterrupted reference run.

Every training test runs ``python -m train`` in a subprocess on configs/tiny.yaml with the same
``TRAIN`` overrides, so all runs share one persistent compilation cache and compile once.
"""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tiny.yaml")

# 12 short steps with a checkpoint every 3 (all four kept): room to damage three and fall back.
TRAIN = [
    "data.seq_len=120",
    "data.batch_size=8",
    "train.steps=12",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.save_every=3",
    "train.keep_checkpoints=4",
    "train.eval_every=0",
]


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
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


def train_cmd(out_dir, *extra: str, config: str = TINY) -> list[str]:
    """``python -m train`` on ``config`` with the TRAIN overrides, then ``extra``."""
    return [sys.executable, "-m", "train", "--config", config, "--output_dir", str(out_dir)] + [
        *TRAIN,
        *extra,
    ]


def run_train(env, out_dir, *extra: str, config: str = TINY, timeout: int = 240):
    """Runs ``train_cmd`` to completion; the CompletedProcess (text stdout and stderr)."""
    return subprocess.run(
        train_cmd(out_dir, *extra, config=config),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def reference(cli_env, tmp_path_factory) -> str:
    """The output directory of one uninterrupted run (checkpoints 3, 6, 9 and 12)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = run_train(cli_env, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out / "checkpoints"), key=int) == ["3", "6", "9", "12"]
    return str(out)


@pytest.fixture
def resumable(reference, tmp_path) -> str:
    """A private copy of the reference run, to damage or resume."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return str(out)
