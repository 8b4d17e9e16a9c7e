"""Helpers shared by the data tests (a plain module: tests/data is on sys.path under pytest)."""

import os

import numpy as np

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if no more out "
    "passkey value number magic special path chunk window memory retrieval long context"
).split()


def make_docs(n: int, *, seed: int = 0, min_words: int = 20, max_words: int = 400) -> list[str]:
    """Deterministic pseudo-English documents (some with non-ASCII characters)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(_WORDS, size=int(rng.integers(min_words, max_words)))
        text = " ".join(words)
        if i % 3 == 0:
            text += " café naïve 東京 — “quoted”.\n"
        docs.append(f"Document {i}.\n{text}\n")
    return docs


def write_docs(directory, docs, *, names=None) -> list[str]:
    """Write one UTF-8 file per document; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, text in enumerate(docs):
        name = names[i] if names else f"doc{i:04d}.txt"
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(path)
    return paths


def corpus_documents(corpus_dir) -> list[str]:
    """Decoded documents of a prepared corpus (EOT stripped), checking each ends with EOT."""
    from gca_jax.data import TokenStream, load_tokenizer, read_manifest

    manifest = read_manifest(corpus_dir)
    spec = manifest["tokenizer_spec"]
    tok = load_tokenizer(spec if spec == "bytes" else os.path.join(corpus_dir, spec))
    stream = TokenStream(corpus_dir)
    out = []
    for i in range(manifest["num_documents"]):
        ids = stream.document(i)
        assert ids[-1] == tok.eot_id
        out.append(tok.decode(ids[:-1]))
    return out
