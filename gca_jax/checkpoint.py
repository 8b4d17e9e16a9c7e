"""Orbax checkpoints of a training run: train state, grain iterator state, config and digest.

Layout: ``<dir>/<step>/{state, data, config, digest}``; ``state`` is the sharded TrainState
pytree, ``data`` the grain iterator state (JSON), ``config`` the resolved Config (JSON) and
``digest`` two uint32 checksums of every array (``tree_digest``). Saves are asynchronous (the
device->host copy blocks, the writes do not); Orbax writes into a temporary directory and renames
it when complete, so a save cut short by a crash leaves no step directory.

Guarantees (docs/reliability.md):
- A state holding a non-finite value is never saved (``save`` raises FloatingPointError).
- A save that fails (a full disk) raises ``CheckpointSaveError`` at the next ``check``, ``save``
  or ``close``, its temporary directory is removed, and no older checkpoint is deleted.
- Rotation keeps the ``keep`` newest complete checkpoints and runs only after a save completed,
  so the newest complete checkpoint is never removed.
- Restore reads the newest checkpoint into an abstract, sharded target and verifies it: every
  read error (Orbax raises a bare ``Exception`` for a truncated file), a structure, shape or
  dtype mismatch, a digest mismatch and a non-finite value count as damage. A damaged
  checkpoint is reported with a warning and moved to ``<dir>/../damaged_checkpoints``, and
  restore falls back to the next older one.
"""

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gca_jax.cli import UserError

logger = logging.getLogger(__name__)

DIGEST_FORMAT = "gca_jax.digest/1"
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


class DamagedCheckpointError(UserError):
    """No checkpoint in the directory could be restored."""


class CheckpointSaveError(UserError):
    """A checkpoint could not be written (full disk, lost permissions); training must stop."""


class _Damage(Exception):
    """One checkpoint failed a read or a check; the message says how."""


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


# -- digests -------------------------------------------------------------------------------------


def _words_u32(x: jax.Array) -> jax.Array:
    """The bits of ``x`` as uint32 words (8-byte dtypes get a trailing axis of 2)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size in (4, 8):
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)


def _leaf_digest(x: jax.Array) -> jax.Array:
    """(2,) uint32: the sum of the words and the sum of word * (2 * position + 1), mod 2**32.

    Any changed word changes the first sum; moved words change the second. Modular sums do not
    depend on the order of summation, so the digest is the same however the array is sharded.
    The position is built from per-axis iotas rather than a reshape, which would regather a
    sharded array.
    """
    w = _words_u32(x)
    pos = jnp.zeros(w.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(w.ndim)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis)
        pos = pos + iota * np.uint32(stride % 2**32)
        stride *= w.shape[axis]
    weighted = w * (pos * np.uint32(2) + np.uint32(1))
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(weighted, dtype=jnp.uint32)])


def _leaf_finite(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.all(jnp.isfinite(x))
    return jnp.array(True)


@jax.jit
def _digest_arrays(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """((N, 2) uint32 digests, (N,) bool all-finite) of N arrays, in one jitted pass."""
    if not leaves:
        return jnp.zeros((0, 2), jnp.uint32), jnp.zeros((0,), bool)
    return (
        jnp.stack([_leaf_digest(x) for x in leaves]),
        jnp.stack([_leaf_finite(x) for x in leaves]),
    )


def tree_digest(tree: Any) -> tuple[dict[str, list[int]], list[str]]:
    """Checksums of every array of a pytree, and the arrays that hold a non-finite value.

    Args:
      tree: a pytree of (possibly sharded) arrays.

    Returns:
      ({leaf path: [sum, weighted sum]}, [paths of leaves with NaN or Inf]).
    """
    with_path = jax.tree_util.tree_leaves_with_path(tree)
    digests, finite = jax.device_get(_digest_arrays([leaf for _, leaf in with_path]))
    names = [_path_name(path) for path, _ in with_path]
    table = {name: [int(a), int(b)] for name, (a, b) in zip(names, digests, strict=True)}
    return table, [name for name, ok in zip(names, finite, strict=True) if not ok]


def _read_json(step_dir: str, item: str) -> dict:
    with open(os.path.join(step_dir, item, "metadata")) as f:
        return json.load(f)


def _verify(tree: Any, saved: dict | None, *, prefix: str = "") -> None:
    """Compares ``tree``'s digest with ``saved`` (the ``digest`` item) and checks finiteness.

    Args:
      tree: the restored pytree.
      saved: the saved digest item, or None for a checkpoint saved without one.
      prefix: only saved leaves under this path prefix are compared (a partial restore).

    Raises:
      _Damage: a digest that differs, a missing entry or a non-finite value.
    """
    table, non_finite = tree_digest(tree)
    if non_finite:
        raise _Damage(f"non-finite values in {len(non_finite)} arrays, e.g. {non_finite[0]}")
    if saved is None:
        return
    if saved.get("format") != DIGEST_FORMAT:
        raise _Damage(f"digest format {saved.get('format')!r} is not {DIGEST_FORMAT!r}")
    want = {k: v for k, v in saved["leaves"].items() if k.startswith(prefix)}
    differ = [k for k in table if want.get(k) != table[k]]
    if differ or want.keys() - table.keys():
        first = differ[0] if differ else sorted(want.keys() - table.keys())[0]
        raise _Damage(f"digest mismatch in {len(differ)} arrays, e.g. {first}")


# -- Orbax's own error logs ----------------------------------------------------------------------


class _QuietOrbaxErrors(logging.Filter):
    """Drops Orbax's ERROR records (tracebacks): the Checkpointer raises those errors itself.

    Orbax logs a failed write or read with its traceback from its own threads, and asyncio logs
    the failed read tasks it cancels at shutdown; each one arrives here as well as the error
    that ``save``, ``check`` or ``restore_latest`` reports in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        # The record's own path is absl's wrapper when the "absl" logger was created before
        # absl was imported; the traceback's frames still name Orbax.
        tb = record.exc_info[2] if record.exc_info else None
        paths = [record.pathname] + [f.f_code.co_filename for f, _ in traceback.walk_tb(tb)]
        is_orbax = any(_ORBAX_DIR in p for p in paths) or "orbax" in record.getMessage()
        if is_orbax:
            logger.debug("orbax error (reported by the checkpointer): %s", record.getMessage())
        return not is_orbax


_ORBAX_DIR = f"{os.sep}orbax{os.sep}"
_NOISY_LOGGERS = ("absl", "asyncio")


@contextlib.contextmanager
def _quiet_orbax():
    """Installs ``_QuietOrbaxErrors`` on Orbax's and asyncio's loggers while the block runs."""
    quiet = _QuietOrbaxErrors()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)


def _is_no_space(e: BaseException) -> bool:
    """Whether a (possibly tensorstore-wrapped) error is a full disk."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return f"os_error_code='{errno.ENOSPC}'" in text or "No space left on device" in text


# Status codes that tensorstore puts first in the ValueError of a failed read.
_READ_STATUSES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND", "UNKNOWN")


def _is_read_error(e: BaseException) -> bool:
    """Whether a ValueError is tensorstore's failed read (damage) rather than a shape mismatch."""
    return isinstance(e, ValueError) and str(e).startswith(_READ_STATUSES)


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


def _root_cause(e: BaseException) -> str:
    """``Type: first line`` of the innermost cause (Orbax wraps tensorstore's precise error)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {_first_line(e)}"


# -- the checkpointer ----------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores (state, data iterator, config, digest), keeping the newest ``keep``.

    Args:
      directory: checkpoint root, created if missing.
      keep: number of most recent complete checkpoints kept.
      use_async: write files in a background thread.
    """

    def __init__(self, directory: str, *, keep: int, use_async: bool = True):
        self.directory = os.path.abspath(directory)
        self.keep = keep
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # Rotation is ours: only after a save is known to be complete.
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=use_async,
        )
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(_quiet_orbax())
        self._mngr = ocp.CheckpointManager(
            self.directory, item_names=("state", "data", "config", "digest"), options=options
        )
        self._pending: int | None = None  # the step whose save is in flight
        self.last_good: int | None = None  # the newest checkpoint saved or restored intact

    def all_steps(self) -> list[int]:
        """Steps of the complete (finalised) checkpoints, ascending."""
        return sorted(self._mngr.all_steps())

    # -- save ------------------------------------------------------------------------------------

    def prepare(self, state: Any) -> None:
        """Compiles the save's checksum pass for ``state`` now, before training.

        A save on SIGTERM then starts no compiler: ``timeout`` and batch schedulers signal the
        whole process group, and a compiler child (ptxas) killed mid-save fails that save.
        """
        tree_digest(state)

    def save(self, step: int, state: Any, data_iter: Any, config: dict) -> None:
        """Starts an asynchronous save of ``step`` (returns once arrays are copied to host).

        Raises:
          FloatingPointError: ``state`` holds a NaN or Inf; nothing is saved.
          CheckpointSaveError: this save or the previous one failed.
        """
        if self._pending is not None:
            self._finish()
        table, non_finite = tree_digest(state)
        if non_finite:
            raise FloatingPointError(
                f"step {step}: the train state holds non-finite values ({len(non_finite)} "
                f"arrays, e.g. {non_finite[0]}); not saved, the last checkpoint "
                f"(step {self.last_good}) is kept"
            )
        items = dict(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config),
            digest=ocp.args.JsonSave({"format": DIGEST_FORMAT, "leaves": table}),
        )
        if data_iter is not None:
            import grain  # Lazily: benchmarks run where grain is not installed.

            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        try:
            self._mngr.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:  # Orbax/tensorstore raise bare Exception and ValueError alike.
            self._remove_tmp(step)
            raise self._save_failed(step, e) from e
        self._pending = step
        logger.info("checkpoint: saving step %d to %s", step, self.directory)
        if not self._mngr.is_saving_in_progress():  # synchronous, or already written
            self._finish()

    def check(self) -> None:
        """Non-blocking: raises CheckpointSaveError if the save in flight has failed.

        Once a save is complete, older checkpoints beyond ``keep`` are removed. In a
        multi-process run this waits for the next ``save`` or ``close`` instead: processes may
        see the save end at different steps, and rotation synchronises them.
        """
        if self._pending is None or jax.process_count() > 1:
            return
        if not self._mngr.is_saving_in_progress():
            self._finish()

    def _finish(self) -> None:
        """Waits for the pending save; on success rotates, on failure raises."""
        step, self._pending = self._pending, None
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # The writer thread's error, re-raised as Orbax caught it.
            self._remove_tmp(step)
            raise self._save_failed(step, e) from e
        self._mngr.reload()
        if step not in self.all_steps():
            self._remove_tmp(step)
            raise self._save_failed(step, RuntimeError("the checkpoint was not finalised"))
        self.last_good = step
        for old in self.all_steps()[: -self.keep]:
            self._mngr.delete(old)

    def _remove_tmp(self, step: int) -> None:
        """Removes a failed save's temporary directory (it may be what fills the disk)."""
        if jax.process_index() == 0:
            shutil.rmtree(os.path.join(self.directory, f"{step}{_TMP_SUFFIX}"), ignore_errors=True)

    def _save_failed(self, step: int, e: BaseException) -> CheckpointSaveError:
        no_space = _is_no_space(e)
        reason = "no space left on the device" if no_space else _first_line(e)
        kept = (
            f"the last complete checkpoint, step {self.last_good}, is intact"
            if self.last_good is not None
            else "no earlier checkpoint was written"
        )
        fix = "free some space" if no_space else "fix the cause"
        return CheckpointSaveError(
            f"checkpoint save of step {step} to {self.directory} failed ({reason}); training "
            f"stopped; {kept}; {fix} and run the same command again to resume"
        )

    # -- restore ---------------------------------------------------------------------------------

    def restore_latest(
        self,
        abstract_state: Any,
        data_iter: Any,
        *,
        check_config: Callable[[dict, int], None] | None = None,
    ) -> tuple[int, Any] | None:
        """Restores the newest intact checkpoint into the abstract sharded target.

        The data iterator (if given) is set to the saved position in place. Damaged checkpoints
        newer than the one restored are moved aside with a warning.

        Args:
          abstract_state: the target pytree of ``jax.ShapeDtypeStruct`` with shardings.
          data_iter: the grain iterator, or None.
          check_config: called with each candidate's saved config and step before its state is
            read; an error it raises (another model) propagates and nothing is moved.

        Returns:
          (step, state), or None when the directory holds no checkpoint.

        Raises:
          DamagedCheckpointError: checkpoints exist but none is intact (none is moved).
        """
        steps = self.all_steps()
        damaged: list[tuple[int, str]] = []
        for step in reversed(steps):
            step_dir = os.path.join(self.directory, str(step))
            try:
                saved_config = _read_json(step_dir, "config")
            except (OSError, ValueError) as e:  # ValueError: json.JSONDecodeError
                damaged.append((step, f"config unreadable: {_first_line(e)}"))
                self._warn_damaged(step, damaged[-1][1], steps)
                continue
            if check_config is not None:
                check_config(saved_config, step)
            try:
                state = self._restore_verified(step, step_dir, abstract_state, data_iter)
            except _Damage as e:
                damaged.append((step, str(e)))
                self._warn_damaged(step, str(e), steps)
                continue
            logger.info("checkpoint: restored step %d from %s (verified)", step, self.directory)
            self._set_aside([s for s, _ in damaged])
            self.last_good = step
            return step, state
        if steps:
            reasons = "; ".join(f"step {s}: {why}" for s, why in damaged)
            raise DamagedCheckpointError(
                f"none of the checkpoints {steps} in {self.directory} is intact ({reasons}); "
                "they are left in place: --fresh moves them aside and starts over, --init_from "
                "takes the weights of another run"
            )
        return None

    def _restore_verified(self, step: int, step_dir: str, abstract_state: Any, data_iter: Any):
        """One checkpoint's state, read and verified; raises _Damage."""
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            digest = _read_json(step_dir, "digest")
        except FileNotFoundError:
            digest = None
            logger.warning("checkpoint step %d has no digest: checked for finiteness only", step)
        except (OSError, ValueError) as e:
            raise _Damage(f"digest unreadable: {_first_line(e)}") from e
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
            _check_like(restored["state"], abstract_state, f"checkpoint step {step}")
        except Exception as e:  # Orbax raises a bare Exception for a truncated file.
            raise _Damage(f"unreadable: {_root_cause(e)}") from e
        _verify(restored["state"], digest)
        return restored["state"]

    def _warn_damaged(self, step: int, why: str, steps: list[int]) -> None:
        older = [s for s in steps if s < step]
        logger.warning(
            "checkpoint at step %d in %s is damaged (%s); falling back to %s",
            step,
            self.directory,
            why,
            f"step {older[-1]}" if older else "nothing (none older)",
        )

    def _set_aside(self, steps: list[int]) -> None:
        """Moves damaged checkpoints to ``<dir>/../damaged_checkpoints`` (kept for autopsy).

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

    # -- lifetime --------------------------------------------------------------------------------

    def wait(self) -> None:
        """Blocks until pending saves are written; raises CheckpointSaveError if one failed."""
        if self._pending is not None:
            self._finish()

    def close(self) -> None:
        """Waits for pending saves (raising CheckpointSaveError) and releases the manager."""
        try:
            self.wait()
        finally:
            self._mngr.close()
            self._quiet.close()

    def abort(self) -> CheckpointSaveError | None:
        """``close`` for a run that is failing already; returns a pending save's error.

        The error is returned, not raised, so that it does not hide the one that stops the run
        (the caller decides which to report).
        """
        try:
            self.close()
        except CheckpointSaveError as e:
            return e
        return None


# -- weights of a checkpoint (fine-tuning, evaluation) -------------------------------------------


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
    leaf for structure, shape and dtype, against the saved digest and for finiteness, before
    the caller puts it into the model.

    Args:
      path: a checkpoint step directory, checkpoint root or run output directory.
      abstract_params: the model's parameter tree (pure dict) of ``jax.ShapeDtypeStruct`` with
        shardings.
      flag: the command-line flag that gave ``path``, named in every error.

    Returns:
      The parameters, laid out as ``abstract_params``.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      ValueError: the saved parameters do not fit the model (another architecture), or the
        checkpoint is damaged (unreadable, digest mismatch, non-finite values).
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
        with _quiet_orbax(), ocp.PyTreeCheckpointer() as ckptr:
            params = ckptr.restore(os.path.join(step_dir, "state"), args=args)["params"]
    except (KeyError, TypeError, ValueError) as e:  # ValueError: a saved shape differs
        if _is_read_error(e):
            raise ValueError(
                f"{where}: the checkpoint is damaged ({_first_line(e)}); use another step"
            ) from e
        raise ValueError(f"{where}: the saved parameters do not fit the model ({e})") from e
    except Exception as e:  # Orbax raises a bare Exception for a truncated file.
        raise ValueError(
            f"{where}: the checkpoint is damaged ({_root_cause(e)}); use another step"
        ) from e
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
    try:
        digest = _read_json(step_dir, "digest")
    except FileNotFoundError:
        digest = None  # Saved without a digest: checked for finiteness only.
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: the checkpoint's digest is unreadable ({e})") from e
    try:
        _verify({"params": params}, digest, prefix="params/")
    except _Damage as e:
        raise ValueError(f"{where}: the checkpoint is damaged ({e}); use another step") from e
    logger.info("parameters restored from %s", step_dir)
    return params


def read_config(step_dir: str) -> dict:
    """The resolved config saved with a checkpoint step."""
    return _read_json(step_dir, "config")
