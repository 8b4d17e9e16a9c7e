"""Process-level setup: multi-host initialisation, and the check that a GPU is really used."""

import glob
import logging
import os
import shutil

import jax

logger = logging.getLogger(__name__)

# Set by the launcher of a multi-process run (jax.distributed reads the same names).
_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize`` when launched multi-process; errors propagate.

    A multi-process launch is recognised by ``JAX_COORDINATOR_ADDRESS`` (plus
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), or by a SLURM job with more than one task.

    Returns:
      Whether jax.distributed was initialised.
    """
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        missing = [v for v in _COORDINATOR_VARS if v not in env]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {missing} are not")
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()  # cluster auto-detection
    else:
        return False
    logger.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


GPU_SETUP_HINT = (
    "install jax's CUDA plugin with `make gpu` (pip install -e '.[cuda]'; README, "
    "'On a GPU machine'), or set JAX_PLATFORMS=cpu to silence this"
)


def nvidia_gpu_present() -> bool:
    """Whether this host has an NVIDIA GPU, judged without jax (driver files or nvidia-smi)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def warn_if_gpu_unused(*, gpu_present: bool | None = None) -> bool:
    """Warns when the host has an NVIDIA GPU but jax runs on the CPU (CPU-only jaxlib).

    A plain ``pip install -e .`` gets the CPU jaxlib, and every benchmark and training run then
    silently uses the CPU. An explicit ``JAX_PLATFORMS`` choice of the CPU is respected.

    Returns:
      Whether it warned.
    """
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return False
    present = nvidia_gpu_present() if gpu_present is None else gpu_present
    if not present or jax.default_backend() != "cpu":
        return False
    logger.warning("this host has an NVIDIA GPU but jax sees only the CPU: %s", GPU_SETUP_HINT)
    return True
