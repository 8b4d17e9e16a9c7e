"""The error convention every command-line tool follows (docs/reliability.md).

Expected errors (a bad flag, key or file, a damaged checkpoint, a full disk) print one line,
``error: ...``, naming what was wrong and how to fix it, and exit with status 2; no traceback
unless ``--debug`` is given. Anything else is a bug and keeps its traceback (status 1).
"""

import errno
import sys
from collections.abc import Callable

import yaml

# What a user can cause and fix: every error raised at a boundary with a message for them.
# ValueError covers ConfigError, MissingCapabilityError, UnsupportedInputError.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    yaml.YAMLError,
)


class UserError(RuntimeError):
    """An expected failure that is not a ValueError (e.g. every checkpoint damaged)."""


def is_expected(e: BaseException) -> bool:
    """Whether ``e`` is an error the user caused and can fix (see ``EXPECTED_ERRORS``)."""
    if isinstance(e, (*EXPECTED_ERRORS, UserError)):
        return True
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def describe(e: BaseException) -> str:
    """The one line printed for an expected error."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device ({e.filename or e}): free some space and run again"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return f"read-only file system: {e.filename or e}"
    return str(e).strip() or type(e).__name__


def run(main: Callable[[], int | None], *, debug: bool = False) -> int:
    """Runs ``main()``; an expected error prints ``error: ...`` and returns 2.

    Args:
      main: the command's body; returns an exit status or None (= 0).
      debug: re-raise expected errors too (their traceback is wanted).

    Returns:
      The exit status.
    """
    try:
        status = main()
    except BaseException as e:  # noqa: BLE001 - classified below; the rest is re-raised
        if debug or not is_expected(e):
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    return 0 if status is None else int(status)
