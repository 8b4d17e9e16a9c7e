"""Attention kernels for DRT, each with a pure-jnp reference and a Pallas (Triton) implementation."""

from kernels._backend import BACKENDS, Backend, BackendOrAuto, UnsupportedInputError

__all__ = ["BACKENDS", "Backend", "BackendOrAuto", "UnsupportedInputError"]
