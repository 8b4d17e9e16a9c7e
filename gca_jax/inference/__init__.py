"""Long-context inference for DRT: chunk memory (device or host), segmented prefill, decoding.

See docs/inference.md for the design and the two fixes over the original's inference path.
"""

from gca_jax.inference.decode import Decoder, DecodeState
from gca_jax.inference.engine import Carry, Engine, PrefillOutput, pad_left
from gca_jax.inference.generate import generate, left_pad_prompts, sample_next
from gca_jax.inference.memory import ChunkStore

__all__ = [
    "Carry",
    "ChunkStore",
    "DecodeState",
    "Decoder",
    "Engine",
    "PrefillOutput",
    "generate",
    "left_pad_prompts",
    "pad_left",
    "sample_next",
]
