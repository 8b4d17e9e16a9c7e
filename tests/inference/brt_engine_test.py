"""The BRT streaming engine equals its full forward; the eval CLIs run it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from eval import passkey, ppl
from gca_jax.inference import make_scorer
from gca_jax.inference.brt_engine import BRTEngine
from gca_jax.modeling import build_model
from tests.modeling.brt_test import L, brt_config

T = 4 * L + 5  # 5 blocks, the last one padded


@pytest.fixture(scope="module")
def model():
    return build_model(brt_config(segment_blocks=2), rngs=nnx.Rngs(3))


def test_streaming_equals_the_full_forward(model):
    engine = make_scorer(model, segment_chunks=4)
    assert isinstance(engine, BRTEngine)
    tokens = np.random.default_rng(4).integers(0, 256, (2, T)).astype(np.int32)
    tokens[1, -3:] = -1  # padding ids are never targets
    at = np.array([[0, L - 1, L, T - 1], [5, 2 * L + 1, 3 * L, 4 * L + 1]])
    out = engine.prefill(tokens, logits_at=at, with_ce=True)
    full = np.asarray(jax.jit(lambda m, t: m.logits(t))(model, jnp.asarray(tokens)))
    want = np.take_along_axis(full, at[:, :, None], axis=1)
    np.testing.assert_allclose(out.logits, want, rtol=1e-5, atol=1e-5)
    loss, aux = model.loss(jnp.asarray(tokens))
    np.testing.assert_allclose(out.ce_sum.sum() / out.ce_count.sum(), loss, rtol=1e-5)
    assert int(out.ce_count.sum()) == int(aux["tokens"]) == 2 * (T - 1) - 3
    assert engine.prefill(tokens[:, :3]).logits is None  # a single short block


def test_refused_options(model):
    with pytest.raises(ValueError, match="nothing to offload"):
        make_scorer(model, segment_chunks=4, offload=True)
    engine = BRTEngine(model)
    tokens = np.zeros((1, L), np.int32)
    with pytest.raises(ValueError, match=r"\['keep_state'\]: not supported"):
        engine.prefill(tokens, keep_state=True)
    with pytest.raises(ValueError, match="must be in"):
        engine.prefill(tokens, logits_at=[L])


BRT = [
    "--random_init",
    "--config",
    "configs/niah_brt_small.yaml",
    "data.corpus_dir=null",
    "data.eval_corpus_dir=null",
    "hidden_size=32",
    "mlp_hidden=64",
    "num_layers=2",
    "model.brt.block_len=32",
    "state_len=4",
    "kernel_backend=xla",
]


def test_passkey_and_ppl_clis_run_brt(tmp_path):
    pk = ["--lengths", "192", "--samples", "2", "--out", str(tmp_path / "pk")]
    assert passkey.main(BRT + ["data.niah_chunk_len=32"] + pk) == 0
    summary = json.loads((tmp_path / "pk" / "passkey.json").read_text())["summaries"][0]
    assert summary["samples"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    argv = BRT + ["--lengths", "100", "--windows", "2", "--out", str(tmp_path / "ppl")]
    assert ppl.main(argv) == 0
    res = json.loads((tmp_path / "ppl" / "ppl.json").read_text())["results"][0]
    assert np.isfinite(res["ppl"]) and res["windows"] == 2
