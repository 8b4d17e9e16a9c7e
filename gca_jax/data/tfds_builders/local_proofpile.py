"""`local_proofpile`: the arXiv part of proof-pile from a local copy (spec §5.1).

Reads `<manual_dir>/{train,dev,test}/*.jsonl.gz` and keeps lines whose `meta.config` is "arxiv".
Feature: `text` (Text).
"""

import gzip
import json
import os

import tensorflow_datasets as tfds

SPLITS = ("train", "dev", "test")


class LocalProofpile(tfds.core.GeneratorBasedBuilder):
    """proof-pile arXiv documents from local files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Local copy of proof-pile (arXiv only), read from manual_dir."}
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
            opener = gzip.open if name.endswith(".gz") else open
            with opener(os.path.join(directory, name), "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f):
                    record = json.loads(line)
                    meta = record.get("meta")
                    if isinstance(meta, str):
                        meta = json.loads(meta)
                    if isinstance(meta, dict) and meta.get("config") == "arxiv":
                        yield f"{name}:{lineno}", {"text": record["text"]}
