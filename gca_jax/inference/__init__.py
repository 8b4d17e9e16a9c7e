"""Long-context inference: chunk memory (device or host), segmented prefill, decoding, scorers.

See docs/inference.md for the design and the two fixes over the original's inference path.
"""

from gca_jax.inference.decode import Decoder, DecodeState
from gca_jax.inference.engine import Carry, Engine, PrefillOutput, pad_left
from gca_jax.inference.full_forward import FullForwardScorer
from gca_jax.inference.generate import generate, left_pad_prompts
from gca_jax.inference.memory import ChunkStore
from gca_jax.inference.sampling import sample_next
from gca_jax.inference.scoring import make_scorer

__all__ = [
    "Carry",
    "ChunkStore",
    "DecodeState",
    "Decoder",
    "Engine",
    "FullForwardScorer",
    "PrefillOutput",
    "generate",
    "left_pad_prompts",
    "make_scorer",
    "pad_left",
    "sample_next",
]
