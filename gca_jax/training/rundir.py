"""A run's output directory: one live run at a time (a lock file), and --fresh moving it aside.

``<output_dir>/train.lock`` holds the owner's pid and host. It is locked with ``flock`` for the
run's lifetime, so the lock ends with the process however it ends (SIGKILL included) and a lock
file left behind by a dead run is simply taken over. ``--fresh`` moves the previous run's records
(checkpoints, best checkpoint, metrics, TensorBoard events, quarantined checkpoints) into
``<output_dir>/previous/<time>/`` instead of deleting them (docs/reliability.md).
"""

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator

logger = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
PREVIOUS_DIR = "previous"
# What --fresh moves aside; the built-in corpus stays (it does not depend on the run).
RUN_RECORDS = ("checkpoints", "best", "metrics.jsonl", "tensorboard", "damaged_checkpoints")


class RunDirError(ValueError):
    """The output directory cannot be used (not writable, or in use by another run)."""


def _owner(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read().split()
    except OSError:
        return "another process"
    pid, host = (text + ["?", "?"])[:2]
    return f"pid {pid} on host {host}"


@contextlib.contextmanager
def locked(output_dir: str) -> Iterator[str]:
    """Creates ``output_dir`` and holds its lock while the block runs.

    Args:
      output_dir: the run directory (``--output_dir``).

    Yields:
      The absolute output directory.

    Raises:
      RunDirError: the directory cannot be created or written, or another live run holds it.
    """
    output_dir = os.path.abspath(output_dir)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(
            f"--output_dir {output_dir} is not writable ({e.strerror}): choose another directory"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise RunDirError(
                f"--output_dir {output_dir} is in use by another training run ({_owner(path)}, "
                f"lock file {path}): wait for it to finish, stop it, or use another --output_dir"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        yield output_dir
    finally:
        os.close(fd)  # Releases the flock; the file stays (removing it would race a new owner).


def move_aside(output_dir: str) -> str | None:
    """Moves the previous run's records into ``<output_dir>/previous/<time>`` (--fresh).

    Returns:
      Where they went, or None when there was nothing to move.
    """
    present = [n for n in RUN_RECORDS if os.path.lexists(os.path.join(output_dir, n))]
    if not present:
        return None
    dest = os.path.join(output_dir, PREVIOUS_DIR, time.strftime("%Y%m%d-%H%M%S"))
    while os.path.exists(dest):  # Two --fresh runs within one second.
        dest += "_"
    os.makedirs(dest)
    for name in present:
        os.rename(os.path.join(output_dir, name), os.path.join(dest, name))
    logger.warning(
        "--fresh: the previous run's %s moved to %s (delete it when no longer needed)",
        ", ".join(present),
        dest,
    )
    return dest
