"""The prepared-corpus manifest: what a corpus directory holds and which tokenizer made it.

A corpus directory holds ArrayRecord shards (one record = one document's token ids as raw
little-endian bytes of `token_dtype`, the document's EOT included), one `<shard>.lengths.npy` per
shard (the token count of each record), and `manifest.json`:

```
{"format": "gca_jax.corpus/1", "complete": true, "tokenizer": {identity...}, "tokenizer_spec": ...,
 "token_dtype": "uint16", "source": {...}, "split": "train", "num_documents": N, "num_tokens": M,
 "shards": [{"name": "shard-00000.array_record", "num_documents": n, "num_tokens": m}, ...],
 "skipped": {"empty": 1, "undecodable": 0, ...}}
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT = "gca_jax.corpus/1"
# Identity keys that must agree between a corpus, a tokenizer and a checkpoint.
_IDENTITY_KEYS = ("kind", "sha256", "vocab_size", "eot_id", "pad_id", "landmark_id")


def token_dtype_for(vocab_size: int) -> str:
    """Smallest unsigned dtype name that holds every id below `vocab_size`."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def write_json_atomic(path: str, obj) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(corpus_dir: str | os.PathLike, *, require_complete: bool = True) -> dict:
    """Read and validate `<corpus_dir>/manifest.json`.

    Args:
        corpus_dir: a directory written by `prepare_corpus`.
        require_complete: refuse a corpus whose preparation has not finished.

    Returns:
        The manifest dict.

    Raises:
        ValueError: if the directory or manifest is missing, of another format, or incomplete.
    """
    corpus_dir = os.fspath(corpus_dir)
    path = os.path.join(corpus_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"{corpus_dir=} holds no {MANIFEST_NAME}; prepare it with `python -m train.prepare`"
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format={manifest.get('format')!r} must be {FORMAT!r}")
    if require_complete and not manifest.get("complete", False):
        raise ValueError(
            f"{corpus_dir=} is only partly prepared (complete=false); re-run the same "
            "`python -m train.prepare` command to finish it"
        )
    return manifest


def check_tokenizer_matches(
    manifest_or_dir: Mapping | str | os.PathLike, tokenizer_identity: Mapping
) -> None:
    """Raise if a corpus was prepared with another tokenizer than `tokenizer_identity`.

    Args:
        manifest_or_dir: a manifest dict, or a corpus directory.
        tokenizer_identity: `Tokenizer.identity` of the tokenizer (or one saved in a checkpoint).

    Raises:
        ValueError: naming every key whose value differs.
    """
    if isinstance(manifest_or_dir, Mapping):
        manifest, where = manifest_or_dir, "manifest"
    else:
        manifest, where = read_manifest(manifest_or_dir, require_complete=False), manifest_or_dir
    corpus_identity = manifest["tokenizer"]
    diffs = [
        f"{k}: corpus={corpus_identity.get(k)!r} vs tokenizer={tokenizer_identity.get(k)!r}"
        for k in _IDENTITY_KEYS
        if corpus_identity.get(k) != tokenizer_identity.get(k)
    ]
    if diffs:
        raise ValueError(
            f"corpus {where} was prepared with a different tokenizer ({'; '.join(diffs)}); "
            "use the tokenizer recorded in its manifest.json or re-prepare the corpus"
        )


def shard_paths(corpus_dir: str | os.PathLike, manifest: Mapping) -> list[str]:
    """Absolute paths of the corpus shards, in manifest order."""
    return [os.path.join(os.fspath(corpus_dir), s["name"]) for s in manifest["shards"]]


def load_doc_lengths(corpus_dir: str | os.PathLike, manifest: Mapping) -> np.ndarray:
    """Token count of every document in stream order, int64 (D,)."""
    parts = [
        np.load(os.path.join(os.fspath(corpus_dir), s["name"] + ".lengths.npy"))
        for s in manifest["shards"]
    ]
    if not parts:
        return np.zeros((0,), np.int64)
    return np.concatenate(parts).astype(np.int64)
