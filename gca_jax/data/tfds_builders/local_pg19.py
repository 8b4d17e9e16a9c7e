"""`local_pg19`: PG-19 books from a local copy (`<manual_dir>/{train,validation,test}/<id>.txt`).

The catalog `pg19` builder reads `gs://deepmind-gutenberg` with TensorFlow; this one needs neither.
Features: `book_text` (Text) and `book_id` (int64). Files that are not valid UTF-8 are skipped with
a warning.
"""

import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds

logger = logging.getLogger(__name__)
_BOOK = re.compile(r"^(\d+)\.txt$")
SPLITS = ("train", "validation", "test")


class LocalPg19(tfds.core.GeneratorBasedBuilder):
    """PG-19 from local files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Local copy of PG-19, read from manual_dir."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the PG-19 directories train/, validation/ and test/ (files <id>.txt) in manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"book_text": tfds.features.Text(), "book_id": tfds.features.Scalar(np.int64)}
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
        if not present:
            raise ValueError(
                f"manual_dir={root!r} has none of the PG-19 split directories {SPLITS}"
            )
        return {s: self._generate_examples(os.path.join(root, s)) for s in present}

    def _generate_examples(self, directory):
        for name in sorted(os.listdir(directory)):
            match = _BOOK.match(name)
            if not match:
                continue
            with open(os.path.join(directory, name), "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                logger.warning("local_pg19: skipping %s (not UTF-8)", name)
                continue
            yield match.group(1), {"book_text": text, "book_id": int(match.group(1))}
