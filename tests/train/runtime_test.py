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


def test_warns_when_a_gpu_is_present_but_jax_runs_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setenv("JAX_PLATFORMS", "")  # no explicit choice of the CPU
    assert runtime.warn_if_gpu_unused(gpu_present=True) is True
    assert "NVIDIA GPU but jax sees only the CPU" in caplog.text and "make gpu" in caplog.text
    assert runtime.warn_if_gpu_unused(gpu_present=False) is False


def test_an_explicit_cpu_choice_is_respected(monkeypatch, caplog):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert runtime.warn_if_gpu_unused(gpu_present=True) is False
    assert "NVIDIA GPU" not in caplog.text
