"""`local_proofpile`: the arXiv part of proof-pile from a local copy (docs/spec.md §5.1).

Reads `<manual_dir>/{train,dev,test}/*.jsonl[.gz]` through `sources.proofpile.iter_arxiv_documents`,
the reader of `--format proofpile`, so both routes keep the same documents: arXiv records by the one
filter `sources.proofpile.is_arxiv`, with bad lines, non-arXiv and empty texts dropped (logged).
Feature: `text` (Text).
"""

import collections
import logging
import os

import tensorflow_datasets as tfds

from gca_jax.data.sources import proofpile

logger = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


class LocalProofpile(tfds.core.GeneratorBasedBuilder):
    """proof-pile arXiv documents from local files."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Local copy of proof-pile (arXiv only), read from manual_dir.",
        "1.1.0": "Reads as `--format proofpile` does: a line that is not JSON, or whose meta "
        "string is not JSON, is dropped instead of failing the build; empty texts are dropped.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put proof-pile's train/, dev/ and test/ directories of *.jsonl.gz files in manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
        if not present:
            raise ValueError(f"manual_dir={root!r} has none of the proof-pile splits {SPLITS}")
        return {s: self._generate_examples(os.path.join(root, s)) for s in present}

    def _generate_examples(self, directory):
        for name in sorted(os.listdir(directory)):
            if not name.endswith((".jsonl.gz", ".jsonl")):
                continue
            skipped: collections.Counter = collections.Counter()
            for lineno, text in proofpile.iter_arxiv_documents(
                os.path.join(directory, name), skipped
            ):
                yield f"{name}:{lineno - 1}", {"text": text}  # 0-based keys, as in 1.0.0.
            if skipped:
                logger.info("local_proofpile: %s: dropped %s", name, dict(skipped))
