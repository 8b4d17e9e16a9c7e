"""Project-owned tensorflow-datasets builders that read a local copy from `manual_dir`, offline.

Importing this package registers `local_pg19` and `local_proofpile` with tfds (the usual tfds
mechanism); `gca_jax.data.sources.tfds` imports it only when a tfds source is asked for.
"""

from gca_jax.data.tfds_builders.local_pg19 import LocalPg19
from gca_jax.data.tfds_builders.local_proofpile import LocalProofpile

__all__ = ["LocalPg19", "LocalProofpile"]
