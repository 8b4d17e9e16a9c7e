"""Attention kernels for DRT and its baselines: each a pure-jnp reference and a Pallas kernel.

One public function per op, with a ``backend`` switch: ``"xla"`` (reference), ``"pallas"``
(GPU), ``"interpret"`` (the Pallas kernels on CPU) and ``"auto"``.
"""

from kernels._backend import BACKENDS, Backend, BackendOrAuto, UnsupportedInputError
from kernels.gca import gca_attention, gca_decode
from kernels.landmark import landmark_attention
from kernels.swa import sliding_window_attention, sliding_window_decode

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOrAuto",
    "UnsupportedInputError",
    "gca_attention",
    "gca_decode",
    "landmark_attention",
    "sliding_window_attention",
    "sliding_window_decode",
]
