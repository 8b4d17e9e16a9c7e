"""BM25 idf of a prepared corpus: the prepare command, a plain recount, and the model reading it."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
from flax import nnx

from gca_jax.config import RPTConfig
from gca_jax.data import TokenStream
from gca_jax.modeling import build_model
from tests.modeling.conftest import tiny_model_config
from train import prepare as prepare_cli

S = 15  # tiny.yaml's chunk length


def _rpt_config(**rpt):
    return dataclasses.replace(tiny_model_config(), model_type="rpt", rpt=RPTConfig(**rpt))


@pytest.fixture
def corpus(byte_corpus, tmp_path):
    """A private copy of the byte corpus (the idf files are written into it)."""
    return str(shutil.copytree(byte_corpus, tmp_path / "corpus"))


def test_prepare_writes_the_idf_of_the_stream_chunks_and_the_model_reads_it(corpus, capsys):
    assert prepare_cli.main(["--bm25-idf", corpus, "--chunk_len", str(S)]) == 0
    assert "model.rpt.idf_path=" in capsys.readouterr().out
    params = json.load(open(f"{corpus}/bm25_idf.json"))
    idf = np.load(f"{corpus}/bm25_idf.npy")
    # Plain recount: chunks [i S, (i + 1) S) of the stream, distinct ids per chunk.
    stream = TokenStream(corpus)
    n = stream.num_tokens // S
    chunks = stream.read(0, n * S).reshape(n, S)
    vocab, pad = params["vocab_size"], params["pad_id"]
    df = np.zeros(vocab)
    for chunk in chunks:
        for t in set(chunk.tolist()) - {pad}:
            df[t] += 1
    want = [math.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df]
    np.testing.assert_allclose(idf, want, rtol=1e-6)
    assert params["num_chunks"] == n and params["hash"] == "identity"
    assert params["buckets"] == vocab and params["avg_len"] == pytest.approx(S)

    model = build_model(_rpt_config(idf_path=f"{corpus}/bm25_idf.npy"), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.retriever.idf.array, idf)
    assert model.retriever.avg_len == pytest.approx(params["avg_len"])


def test_missing_or_mismatched_idf_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="train.prepare --bm25-idf"):
        build_model(_rpt_config(idf_path=str(tmp_path / "none" / "bm25_idf.npy")), rngs=nnx.Rngs(0))
    assert prepare_cli.main(["--bm25-idf", corpus, "--chunk_len", "8", "--buckets", "64"]) == 0
    with pytest.raises(ValueError, match="buckets: file 64 vs model 259.*chunk_len: file 8"):
        build_model(_rpt_config(idf_path=f"{corpus}/bm25_idf.npy"), rngs=nnx.Rngs(0))
    with pytest.raises(SystemExit):
        prepare_cli.main(["--bm25-idf", corpus])  # no --chunk_len
