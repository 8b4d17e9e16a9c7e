"""Orbax checkpoints of a training run: train state + grain iterator state + resolved config.

Layout: ``<dir>/<step>/{state, data, config}``; ``state`` is the sharded TrainState pytree,
``data`` the grain iterator state (JSON), ``config`` the resolved Config (JSON). Saves are
asynchronous (the device->host copy blocks, the writes do not); Orbax writes into a temporary
directory and renames it when complete, so a save cut short by a crash leaves no step directory
(and its temporary directory is removed on the next start).

Restore reads into an abstract, sharded target. If the latest checkpoint cannot be read (damaged
files), restore logs a warning naming it and falls back to the previous one.
"""

import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

# What a damaged checkpoint raises on read: missing/truncated files (OSError, FileNotFoundError),
# undecodable JSON or metadata (ValueError, incl. json.JSONDecodeError), tensorstore read errors
# (ValueError), a pytree that does not match the target (KeyError, ValueError, TypeError).
RESTORE_ERRORS = (OSError, ValueError, KeyError, TypeError)


class DamagedCheckpointError(RuntimeError):
    """No checkpoint in the directory could be restored."""


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _check_like(restored: Any, target: Any, where: str) -> None:
    """Structure, shape and dtype of a restored pytree must equal the target's.

    Raises:
      ValueError: naming ``where`` and the first leaf that differs.
    """
    if jax.tree.structure(restored) != jax.tree.structure(target):
        raise ValueError(f"{where}: the saved tree differs from the model's (another model?)")
    paths = jax.tree_util.tree_leaves_with_path(target)
    for r, (path, t) in zip(jax.tree.leaves(restored), paths, strict=True):
        if r.shape != t.shape or r.dtype != t.dtype:
            raise ValueError(
                f"{where}: {_path_name(path)} is {r.shape} {r.dtype} in the checkpoint, the model "
                f"expects {t.shape} {t.dtype} (another model config?)"
            )


class Checkpointer:
    """Saves and restores (state, data iterator, config) with a keep-latest-N policy.

    Args:
      directory: checkpoint root, created if missing.
      keep: number of most recent checkpoints kept.
      use_async: write files in a background thread.
    """

    def __init__(self, directory: str, *, keep: int, use_async: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=use_async,
        )
        self._mngr = ocp.CheckpointManager(
            self.directory, item_names=("state", "data", "config"), options=options
        )

    def all_steps(self) -> list[int]:
        """Steps of the complete (finalised) checkpoints, ascending."""
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, data_iter: Any, config: dict) -> None:
        """Starts an asynchronous save of ``step`` (returns once arrays are copied to host)."""
        items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config))
        if data_iter is not None:
            import grain  # Lazily: benchmarks run where grain is not installed.

            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self._mngr.save(step, args=ocp.args.Composite(**items), force=True)
        logger.info("checkpoint: saving step %d to %s", step, self.directory)

    def restore_latest(self, abstract_state: Any, data_iter: Any) -> tuple[int, Any] | None:
        """Restores the newest readable checkpoint into the abstract sharded target.

        The data iterator (if given) is set to the saved position in place.

        Returns:
          (step, state), or None when the directory holds no checkpoint.

        Raises:
          DamagedCheckpointError: checkpoints exist but none could be read.
        """
        steps = self.all_steps()
        for step in reversed(steps):
            items = dict(state=ocp.args.StandardRestore(abstract_state))
            if data_iter is not None:
                import grain

                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
            try:
                restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
                _check_like(restored["state"], abstract_state, f"checkpoint step {step}")
            except RESTORE_ERRORS as e:
                older = [s for s in steps if s < step]
                logger.warning(
                    "checkpoint at step %d in %s is damaged or unreadable (%s: %s); falling back "
                    "to %s",
                    step,
                    self.directory,
                    type(e).__name__,
                    str(e)[:300],
                    f"step {older[-1]}" if older else "a fresh start (none older)",
                )
                continue
            logger.info("checkpoint: restored step %d from %s", step, self.directory)
            self._set_aside([s for s in steps if s > step])
            return step, restored["state"]
        if steps:
            raise DamagedCheckpointError(
                f"none of the checkpoints {steps} in {self.directory} could be restored; move the "
                "directory away or pass --fresh to start over"
            )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves unreadable checkpoints to ``<dir>/../damaged_checkpoints`` (kept for autopsy).

        The resumed run can then save those steps again.
        """
        if not steps or jax.process_index() != 0:
            return
        target = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
        os.makedirs(target, exist_ok=True)
        for step in steps:
            dest = os.path.join(target, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.move(os.path.join(self.directory, str(step)), dest)
            logger.warning("moved damaged checkpoint step %d to %s", step, dest)
        self._mngr.reload()

    def wait(self) -> None:
        """Blocks until pending saves are written."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._mngr.wait_until_finished()
        self._mngr.close()


def resolve_step_dir(path: str, *, flag: str = "--checkpoint") -> str:
    """A checkpoint step directory from a step dir, a checkpoint root or a run output dir.

    Args:
      path: what the user passed.
      flag: the command-line flag that passed it, named in the error.

    Raises:
      FileNotFoundError: nothing restorable at ``path``.
    """
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return path
    for root in (path, os.path.join(path, "checkpoints")):
        if os.path.isdir(root):
            steps = [int(n) for n in os.listdir(root) if n.isdigit()]
            steps = [s for s in steps if os.path.isdir(os.path.join(root, str(s), "state"))]
            if steps:
                return os.path.join(root, str(max(steps)))
    raise FileNotFoundError(
        f"{flag} {path}: no checkpoint found (expected <dir>/<step>/state, a checkpoint "
        "root or a run output directory)"
    )


def restore_params(path: str, abstract_params: Any, *, flag: str) -> Any:
    """The parameters of a training checkpoint, read into an abstract (sharded) target.

    The one restore path for weights: fine-tuning (``--init_from``) and every evaluation
    command (``--checkpoint``) use it. Only the ``params`` subtree of the saved TrainState is
    read (partial restore: the optimiser state is neither read nor needed), then checked leaf by
    leaf for structure, shape and dtype before the caller puts it into the model.

    Args:
      path: a checkpoint step directory, checkpoint root or run output directory.
      abstract_params: the model's parameter tree (pure dict) of ``jax.ShapeDtypeStruct`` with
        shardings.
      flag: the command-line flag that gave ``path``, named in every error.

    Returns:
      The parameters, laid out as ``abstract_params``.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      ValueError: the saved parameters do not fit the model (another architecture).
    """
    step_dir = resolve_step_dir(path, flag=flag)
    where = f"{flag} {step_dir}"
    target = {"params": abstract_params}
    args = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            params = ckptr.restore(os.path.join(step_dir, "state"), args=args)["params"]
    except (KeyError, TypeError, ValueError) as e:  # ValueError: a saved shape differs
        raise ValueError(f"{where}: the saved parameters do not fit the model ({e})") from e
    # A partial restore hands back the target's own abstract leaf for a parameter the
    # checkpoint lacks, so a checkpoint of another model would otherwise pass the check below.
    missing = [
        _path_name(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if isinstance(leaf, jax.ShapeDtypeStruct)
    ]
    if missing:
        raise ValueError(
            f"{where}: the checkpoint has no parameter {missing[0]} ({len(missing)} missing; "
            "a checkpoint of another model?)"
        )
    _check_like(params, abstract_params, where)
    logger.info("parameters restored from %s", step_dir)
    return params


def read_config(step_dir: str) -> dict:
    """The resolved config saved with a checkpoint step."""
    with open(os.path.join(step_dir, "config", "metadata")) as f:
        return json.load(f)
