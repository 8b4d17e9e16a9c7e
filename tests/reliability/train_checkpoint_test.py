"""Damaged checkpoints through `python -m train` (docs/reliability.md, "Checkpoints").

Each kind of damage is found on restore, reported with a warning, the damaged checkpoint moved to
damaged_checkpoints/ and training resumed from the next older intact one, finishing bitwise equal
to the uninterrupted reference run; when no checkpoint is intact the run stops with one error
line and moves nothing. A run that ends non-finite exits non-zero and keeps its last finite
checkpoint.
"""

import os
import shutil

import jax
import numpy as np

from tests.reliability import train_helpers as h
from tests.reliability.conftest import run_train


def _damaged(run_dir: str) -> list[int]:
    root = os.path.join(run_dir, "damaged_checkpoints")
    return sorted(int(n.split("-")[0]) for n in os.listdir(root))


def _step_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", str(step))


def test_flipped_truncated_and_metadata_less_checkpoints_fall_back(cli_env, resumable, reference):
    h.flip_bytes(h.array_files(_step_dir(resumable, 12))[0])
    h.truncate(h.array_files(_step_dir(resumable, 9))[0])
    os.remove(os.path.join(_step_dir(resumable, 6), "state", "_METADATA"))

    proc = run_train(cli_env, resumable)

    h.assert_ok(proc)
    for step, older in ((12, 9), (9, 6), (6, 3)):
        assert f"checkpoint at step {step} in" in proc.stderr
        assert "is damaged" in proc.stderr and f"falling back to step {older}" in proc.stderr
    assert "resuming from step 3" in proc.stderr
    assert _damaged(resumable) == [6, 9, 12]  # quarantined, not deleted
    h.assert_same_params(resumable, reference, 12)
    h.assert_records_intact(resumable, 12)


def _flip_one_weight(state):
    table = np.array(state["params"]["embed"]["table"])
    table.view(np.uint32)[5, 7] ^= 1 << 20  # a finite value, changed: only the digest sees it
    state["params"]["embed"]["table"] = table
    return state


def _nan_adam_moment(state):
    mu = np.array(state["opt_state"][1]["mu"]["embed"]["table"])
    mu[3, 0] = np.nan  # the damage of a restore that once went unnoticed and spread NaN
    state["opt_state"][1]["mu"]["embed"]["table"] = mu
    return state


def test_silently_changed_and_non_finite_values_are_damage(cli_env, resumable, reference):
    h.rewrite_state(_step_dir(resumable, 12), _flip_one_weight)
    h.rewrite_state(_step_dir(resumable, 9), _nan_adam_moment)

    proc = run_train(cli_env, resumable)

    h.assert_ok(proc)
    assert "digest mismatch in 1 arrays, e.g. params/embed/table" in proc.stderr
    assert "non-finite values in 1 arrays, e.g. opt_state/1/mu/embed/table" in proc.stderr
    assert "resuming from step 6" in proc.stderr
    assert _damaged(resumable) == [9, 12]
    h.assert_same_params(resumable, reference, 12)
    h.assert_records_intact(resumable, 12)


def test_no_intact_checkpoint_is_one_error_and_moves_nothing(cli_env, resumable):
    for step in (3, 6, 9, 12):
        h.truncate(h.array_files(_step_dir(resumable, step))[0])
    with open(os.path.join(resumable, "metrics.jsonl")) as f:
        metrics = f.read()

    proc = run_train(cli_env, resumable)

    h.assert_one_error(proc, "none of the checkpoints [3, 6, 9, 12]", "--fresh", "--init_from")
    assert h.steps(resumable) == [3, 6, 9, 12]
    assert not os.path.exists(os.path.join(resumable, "damaged_checkpoints"))
    with open(os.path.join(resumable, "metrics.jsonl")) as f:
        assert f.read() == metrics  # nothing rewritten before the error


def _blow_up(state):
    # Finite, but the first forward overflows: every update would be non-finite.
    state["params"] = {
        k: jax.tree.map(lambda x: np.asarray(x) * 1e30, v) for k, v in state["params"].items()
    }
    return state


def test_diverging_run_exits_non_zero_and_keeps_only_finite_checkpoints(cli_env, resumable):
    shutil.rmtree(_step_dir(resumable, 12))  # resume from step 9, into a state that diverges
    h.rewrite_state(_step_dir(resumable, 9), _blow_up, keep_digest=False)

    proc = run_train(cli_env, resumable, "train.max_consecutive_skips=2")

    h.assert_one_error(proc, "training diverged", "2 consecutive non-finite steps")
    assert "step 10: non-finite loss, gradient or update; step skipped" in proc.stderr
    assert h.steps(resumable) == [3, 6, 9]  # nothing non-finite saved, nothing rotated away
    for step in h.steps(resumable):
        h.assert_restorable(_step_dir(resumable, step))
