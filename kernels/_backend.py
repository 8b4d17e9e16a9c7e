"""Backend selection shared by every kernel op.

Each op has three implementations: ``"xla"`` (the pure-jnp reference, ground truth), ``"pallas"``
(Pallas with Triton lowering, GPU only) and ``"interpret"`` (the same Pallas kernels run by the
Pallas interpreter on CPU, for tests). ``"auto"`` picks ``"pallas"`` on GPU when the inputs meet
the kernel's contract and ``"xla"`` otherwise, and logs that choice once per op.
"""

import logging
from typing import Literal, get_args

import jax

Backend = Literal["xla", "pallas", "interpret"]
BackendOrAuto = Literal["auto", "xla", "pallas", "interpret"]
BACKENDS: tuple[str, ...] = get_args(Backend)

_log = logging.getLogger(__name__)
_logged_auto: set[tuple[str, str]] = set()


class UnsupportedInputError(ValueError):
    """Inputs that violate a kernel's contract (shape, dtype or block constraints)."""


def resolve_backend(op: str, backend: str, *, pallas_supported: bool, reason: str = "") -> Backend:
    """Turns a requested backend into the one that runs.

    Args:
      op: op name, for messages.
      backend: one of ``auto``, ``xla``, ``pallas``, ``interpret``.
      pallas_supported: whether the inputs meet the Pallas kernel's contract.
      reason: why the Pallas kernel cannot take these inputs (for the error message).

    Returns:
      The backend to run.

    Raises:
      UnsupportedInputError: an explicitly requested Pallas backend cannot take these inputs, or
        the backend name is unknown. Never falls back silently.
    """
    if backend == "auto":
        on_gpu = jax.default_backend() == "gpu"
        chosen = "pallas" if (on_gpu and pallas_supported) else "xla"
        if (op, chosen) not in _logged_auto:
            _logged_auto.add((op, chosen))
            _log.info(
                "%s: backend 'auto' -> %r (gpu=%s, pallas_supported=%s)",
                op,
                chosen,
                on_gpu,
                pallas_supported,
            )
        return chosen  # type: ignore[return-value]
    if backend not in BACKENDS:
        raise UnsupportedInputError(
            f"{op}: unknown backend={backend!r}; expected one of {('auto',) + BACKENDS}"
        )
    if backend in ("pallas", "interpret") and not pallas_supported:
        raise UnsupportedInputError(f"{op}: backend={backend!r} cannot run these inputs: {reason}")
    return backend  # type: ignore[return-value]
