"""Multi-host detection: no launcher variables -> no jax.distributed; partial variables fail."""

import pytest

from gca_jax.training import runtime


def test_single_process_does_not_initialize(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert runtime.maybe_initialize_distributed() is False


def test_partial_launcher_variables_raise(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        runtime.maybe_initialize_distributed()
