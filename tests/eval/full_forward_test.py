"""The sliding-window baseline is scored through the same eval code as DRT."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from eval import passkey, ppl
from gca_jax.inference import Engine, make_scorer
from gca_jax.inference import evaluation as ev
from gca_jax.inference.full_forward import FullForwardScorer
from gca_jax.inference.swa_engine import SlidingWindowEngine
from gca_jax.modeling import MissingCapabilityError, build_model
from tests.modeling.conftest import tiny_model_config


def test_scorer_logits_and_ce_equal_the_model():
    model = build_model(tiny_model_config(model_type="swa_lm", num_layers=2), rngs=nnx.Rngs(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(0), (2, 90), 0, 256), np.int32)
    out = FullForwardScorer(model).prefill(tokens, logits_at=[3, 50, 89], with_ce=True)
    full = np.asarray(model.logits(tokens))
    np.testing.assert_allclose(out.logits, full[:, [3, 50, 89]], rtol=1e-5, atol=1e-5)
    loss, aux = model.loss(tokens)
    np.testing.assert_allclose(out.ce_sum.sum() / out.ce_count.sum(), loss, rtol=1e-5)
    assert int(out.ce_count.sum()) == int(aux["tokens"])
    with pytest.raises(ValueError, match="must be in"):
        FullForwardScorer(model).prefill(tokens, logits_at=[90])
    with pytest.raises(ValueError, match="DRT inference engine"):
        FullForwardScorer(model).prefill(tokens, keep_state=True)


def test_make_scorer_follows_the_capabilities(tiny_model):
    import tests.modeling.dummy_lm  # noqa: F401  (registers the score-only model_type dummy_bag)

    bag = build_model(tiny_model_config(model_type="dummy_bag"), rngs=nnx.Rngs(0))
    assert isinstance(make_scorer(bag, segment_chunks=4), FullForwardScorer)
    assert isinstance(make_scorer(tiny_model, segment_chunks=4), Engine)
    swa = build_model(tiny_model_config(model_type="swa_lm", num_layers=2), rngs=nnx.Rngs(0))
    assert isinstance(make_scorer(swa, segment_chunks=4), SlidingWindowEngine)
    with pytest.raises(
        MissingCapabilityError, match="model_type='dummy_bag'.*segmented.*--offload"
    ):
        make_scorer(bag, segment_chunks=4, offload=True)
    with pytest.raises(ValueError, match="nothing to offload"):
        make_scorer(swa, segment_chunks=4, offload=True)


SWA = [
    "--random_init",
    "--config",
    "configs/tiny.yaml",
    "model.model_type=swa_lm",
    "model.retrieval=null",
]


def test_passkey_and_ppl_clis_run_the_baseline(tmp_path):
    common = SWA + ["model.num_layers=2"]
    # The baseline has no chunks: NIAH tasks align to data.niah_chunk_len (the DRT's S here).
    pk = ["--lengths", "480", "--samples", "2", "--out", str(tmp_path / "pk")]
    assert passkey.main(common + ["data.niah_chunk_len=15"] + pk) == 0
    summary = json.loads((tmp_path / "pk" / "passkey.json").read_text())["summaries"][0]
    assert summary["samples"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    argv = common + ["--lengths", "240", "--windows", "2", "--out", str(tmp_path / "ppl")]
    assert ppl.main(argv) == 0
    res = json.loads((tmp_path / "ppl" / "ppl.json").read_text())["results"][0]
    assert np.isfinite(res["ppl"]) and res["windows"] == 2
    assert ev.parse_length("4k") == 4096


def test_passkey_cli_asks_for_a_niah_chunk_length(tmp_path, builtin_corpus, capsys):
    argv = SWA + ["--lengths", "480", "--samples", "1", "--corpus", builtin_corpus]
    assert passkey.main(argv + ["--out", str(tmp_path)]) == 2
    assert "set data.niah_chunk_len" in capsys.readouterr().err
