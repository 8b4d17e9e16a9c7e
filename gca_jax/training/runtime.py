"""Process-level setup: multi-host initialisation."""

import logging
import os

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
