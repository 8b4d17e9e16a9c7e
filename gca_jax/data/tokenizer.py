"""Tokenizers: the built-in byte tokenizer and Hugging Face BPE files (GPT-2 or trained here).

Special ids are fixed so that model configs can name them (docs/spec.md §5.2):

- byte tokenizer: ids 0..255 are bytes, eot 256, pad 257, landmark 258, vocab 259;
- GPT-2 BPE: eot 50256 (`<|endoftext|>`), pad 50257 (`<|REDUCE|>`), landmark 50264 (`<chunk>`),
  vocab 50265; the spec "gpt2" names the file `gca_jax.data.gpt2` fetches (docs/data.md §2.1).
  A tokenizer.json that lacks the eight extra tokens of the original (`<|REDUCE|>` ... `<chunk>`)
  gets them appended in the original order, which reproduces those ids.

Ids the wrapper appends are never produced by `encode`; they are inserted by id only, as in the
original. Special tokens already inside a tokenizer.json are matched by HF tokenizers when the text
contains their literal string (e.g. "<|endoftext|>"), unlike tiktoken's `encode_ordinary`; ordinary
corpora (PG-19, arXiv) do not contain them.

Every tokenizer exposes `identity`, a JSON-able dict written into corpus manifests and checkpoints
so that a mismatch is detected before training.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Protocol, runtime_checkable

import numpy as np

from gca_jax.data import gpt2

logger = logging.getLogger(__name__)

BYTES_SPEC = "bytes"  # The other name: gpt2.NAME ("gpt2").
EOT_TOKEN = "<|endoftext|>"
# Extra tokens of the original GPT-2 vocab, in id order 50257..50264 (docs/spec.md §5.2).
GPT2_EXTRA_TOKENS = (
    "<|REDUCE|>",
    "<|pad|>",
    "<|CLS|>",
    "<CLSTGT1>",
    "<CLSTGT2>",
    "<CLSTGT3>",
    "<mask>",
    "<chunk>",
)
PAD_TOKEN = "<|REDUCE|>"
LANDMARK_TOKEN = "<chunk>"


@runtime_checkable
class Tokenizer(Protocol):
    """What the data layer, trainer and evaluator need from a tokenizer."""

    eot_id: int
    pad_id: int
    landmark_id: int
    vocab_size: int

    @property
    def identity(self) -> dict:
        """JSON-able description compared between corpus, tokenizer and checkpoint."""
        ...

    @property
    def special_ids(self) -> frozenset[int]:
        """Special ids (eot, pad, landmark, ...): never drawn as random passkey tokens."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any special token."""
        ...

    def encode_array(self, text: str) -> np.ndarray:
        """Like `encode` but returns an int32 numpy array (fast path for preparation)."""
        ...

    def decode(self, ids) -> str:
        """Text of `ids`; special ids are dropped."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 plus eot 256, pad 257, landmark 258; needs no files."""

    eot_id = 256
    pad_id = 257
    landmark_id = 258
    vocab_size = 259

    @property
    def identity(self) -> dict:
        """See `Tokenizer.identity`."""
        return {
            "kind": "bytes",
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "pad_id": self.pad_id,
            "landmark_id": self.landmark_id,
        }

    @property
    def spec(self) -> str:
        """The string `load_tokenizer` accepts to rebuild this tokenizer."""
        return BYTES_SPEC

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids never produced by `encode`: eot, pad and landmark."""
        return frozenset((self.eot_id, self.pad_id, self.landmark_id))

    def encode(self, text: str) -> list[int]:
        """See `Tokenizer.encode`."""
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """See `Tokenizer.encode_array`."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """See `Tokenizer.decode`; invalid UTF-8 sequences become U+FFFD."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        return arr[arr < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """One visible string per byte id: printable ASCII as itself, else "<0xNN>".

        Special ids are dropped. The pieces the token-level ROUGE joins (`gca_jax.inference.rouge`).
        """
        return [
            chr(i) if 33 <= i < 127 else f"<0x{i:02X}>"
            for i in (int(x) for x in np.asarray(ids).reshape(-1))
            if 0 <= i < 256
        ]


class HFTokenizer:
    """A Hugging Face `tokenizers` file (GPT-2 byte-level BPE or one trained with `train_bpe`).

    Args:
        path: a tokenizer.json file.

    Raises:
        ValueError: if the file does not exist or cannot be parsed.
    """

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer as _HF  # Heavy import kept out of module import.

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"tokenizer {path=} is not a file; pass 'bytes' or a tokenizer.json")
        try:
            self._hf = _HF.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception on malformed files.
            raise ValueError(f"tokenizer {path=} is not a valid tokenizer.json: {e}") from e
        self.path = path
        with open(path, "rb") as f:
            self._sha256 = hashlib.sha256(f.read()).hexdigest()
        self._base_size = self._hf.get_vocab_size(with_added_tokens=True)
        ids: dict[str, int] = {}
        self._extra: dict[str, int] = {}
        for name in (EOT_TOKEN, *GPT2_EXTRA_TOKENS):
            tid = self._hf.token_to_id(name)
            if tid is None:
                tid = self._base_size + len(self._extra)
                self._extra[name] = tid
            ids[name] = tid
        self.eot_id = ids[EOT_TOKEN]
        self.pad_id = ids[PAD_TOKEN]
        self.landmark_id = ids[LANDMARK_TOKEN]
        self.vocab_size = self._base_size + len(self._extra)
        self._special_ids = frozenset(ids.values())
        if self._extra:
            logger.info("tokenizer %s: appended special tokens %s", path, self._extra)

    @property
    def identity(self) -> dict:
        """See `Tokenizer.identity`; includes the sha256 of the tokenizer.json bytes."""
        return {
            "kind": "hf",
            "sha256": self._sha256,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "pad_id": self.pad_id,
            "landmark_id": self.landmark_id,
        }

    @property
    def spec(self) -> str:
        """The string `load_tokenizer` accepts to rebuild this tokenizer."""
        return self.path

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of `<|endoftext|>` and the eight extra tokens (docs/spec.md §5.2)."""
        return self._special_ids

    def encode(self, text: str) -> list[int]:
        """See `Tokenizer.encode`."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        """See `Tokenizer.encode_array`."""
        return np.asarray(self.encode(text), dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode several texts at once (the Rust side may use threads)."""
        encs = self._hf.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids) -> str:
        """See `Tokenizer.decode`."""
        keep = [
            int(i)
            for i in np.asarray(ids).reshape(-1)
            if 0 <= i < self._base_size and int(i) not in self._special_ids
        ]
        return self._hf.decode(keep, skip_special_tokens=False)

    def token_strings(self, ids) -> list[str]:
        """The vocabulary strings of `ids`: GPT-2's byte-level pieces, e.g. "Ġthe" for " the".

        Special ids are dropped. The pieces the token-level ROUGE joins (`gca_jax.inference.rouge`).
        """
        return [
            self._hf.id_to_token(i)
            for i in (int(x) for x in np.asarray(ids).reshape(-1))
            if 0 <= i < self._base_size and i not in self._special_ids
        ]


def load_tokenizer(spec: str | os.PathLike) -> ByteTokenizer | HFTokenizer:
    """Build a tokenizer from a spec.

    Args:
        spec: "bytes" for the built-in byte tokenizer, "gpt2" for the cached GPT-2 tokenizer
            (`data/gpt2/tokenizer.json`, see `gca_jax.data.gpt2`), a path to a tokenizer.json, or
            a directory holding one (e.g. a corpus prepared with a trained tokenizer).

    Returns:
        A `Tokenizer`.

    Raises:
        ValueError: if the spec is neither "bytes" nor an existing tokenizer file or directory;
            for "gpt2" (or its cache path) before the fetch, the message names the command.
    """
    spec = os.fspath(spec)
    if spec == BYTES_SPEC:
        return ByteTokenizer()
    if spec == gpt2.NAME:
        spec = gpt2.tokenizer_path()
    if not os.path.exists(spec) and os.path.abspath(spec) == os.path.abspath(gpt2.tokenizer_path()):
        raise ValueError(gpt2.missing_message())
    if os.path.isdir(spec):
        candidate = os.path.join(spec, "tokenizer.json")
        if not os.path.isfile(candidate):
            raise ValueError(f"tokenizer {spec=} is a directory without tokenizer.json")
        spec = candidate
    if not os.path.exists(spec):
        raise ValueError(f"tokenizer {spec=} must be 'bytes' or an existing tokenizer.json path")
    return HFTokenizer(spec)


def train_bpe(texts, *, vocab_size: int, out_path: str | os.PathLike) -> HFTokenizer:
    """Train a byte-level BPE on `texts` and save it as a tokenizer.json.

    The trained file holds `<|endoftext|>` at id 0; the wrapper appends the eight extra tokens, so
    the loaded tokenizer has exactly `vocab_size` ids.

    Args:
        texts: an iterable of strings (read once).
        vocab_size: total vocabulary size including the nine special ids; at least 300.
        out_path: where to write tokenizer.json.

    Returns:
        The trained tokenizer, loaded from `out_path`.

    Raises:
        ValueError: if `vocab_size` is below 300.
    """
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"{vocab_size=} must be >= 300 (256 bytes + specials + merges)")
    hf = _HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(GPT2_EXTRA_TOKENS),
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    hf.save(os.fspath(out_path))
    tok = HFTokenizer(out_path)
    logger.info("trained BPE with %d ids -> %s", tok.vocab_size, out_path)
    return tok
