"""SIGKILL at random steps, then the same command again (docs/reliability.md, "Interruptions").

The run is killed twice at steps drawn from a seeded generator (possibly inside a checkpoint
write) and restarted each time; the finished run's weights are bitwise equal to the
uninterrupted reference, metrics.jsonl holds every step exactly once and no TensorBoard event
file is empty.
"""

import os
import random
import signal
import subprocess
import time

from tests.reliability import train_helpers as h
from tests.reliability.conftest import REPO, run_train, train_cmd


def _logged_steps(run_dir: str) -> int:
    """How many train rows metrics.jsonl holds now (0 before it exists)."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return sum(1 for line in f if '"split": "train"' in line)
    except FileNotFoundError:
        return 0


def _kill_at(env, run_dir: str, rows: int, timeout: float = 240) -> None:
    """Starts the run and SIGKILLs it once metrics.jsonl holds ``rows`` train rows."""
    child = subprocess.Popen(
        train_cmd(run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while _logged_steps(run_dir) < rows and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_sigkill_at_random_steps_then_resume_is_exact(cli_env, reference, tmp_path):
    run_dir = str(tmp_path / "run")
    rng = random.Random(17)
    first = rng.randint(2, 8)
    _kill_at(cli_env, run_dir, first)
    # Beyond the rows the first run left (a kill can land after one more row), so the restart
    # has truncated metrics.jsonl to its checkpoint and trained past it before it is killed.
    _kill_at(cli_env, run_dir, rng.randint(first + 2, 11))

    proc = run_train(cli_env, run_dir)

    h.assert_ok(proc)
    assert "resuming from step" in proc.stderr
    assert h.steps(run_dir) == [3, 6, 9, 12]
    h.assert_same_params(run_dir, reference, 12)
    h.assert_records_intact(run_dir, 12)
