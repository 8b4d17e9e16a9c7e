"""eval.generate and eval.inspect_retrieval end to end on the tiny config, and their errors."""

import json
import os

import pytest

from eval import _common
from eval import generate as generate_cli
from eval import inspect_retrieval as inspect_cli
from gca_jax.modeling import MissingCapabilityError

TINY = ["--random_init", "--config", "configs/tiny.yaml"]
SWA = TINY + ["model.model_type=swa_lm", "model.retrieval=null"]
# A score-only model type (a plugin): the example of a model lacking evaluation paths.
SCORE_ONLY = ["--plugin", "tests.modeling.dummy_lm", *TINY, "model.model_type=dummy_bag"]
SCORE_ONLY += ["model.retrieval=null"]


def test_generate_streams_text(capsys):
    argv = TINY + ["--prompt", "The answer is", "--max_new_tokens", "20"]
    assert generate_cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The answer is")  # the text alone on stdout
    assert "model: RANDOM weights (--random_init, seed 0)" in err


def test_generate_runs_the_sliding_window_lm(capsys):
    argv = SWA + ["--prompt", "The answer is", "--max_new_tokens", "5"]
    assert generate_cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("The answer is")


def test_generate_rejects_empty_prompt(capsys):
    argv = TINY + ["--prompt", "", "--max_new_tokens", "5"]
    assert generate_cli.main(argv) == 2
    assert "empty" in capsys.readouterr().err


def test_inspect_retrieval_json_and_heatmap(tmp_path):
    out = str(tmp_path / "insp")
    text = "Chunks of text that retrieve earlier chunks. " * 8  # 360 bytes: 24 chunks
    argv = TINY + ["--text", text, "--out", out]
    assert inspect_cli.main(argv) == 0
    result = json.load(open(os.path.join(out, "retrieval.json")))
    assert result["random_init"] and result["checkpoint"] is None
    assert len(result["groups"]) == 2 and len(result["chunks"]) == 24
    for rows in result["groups"]:
        assert rows[0]["retrieved"] == [] and rows[1]["retrieved"] == []
        for r in rows[2:]:
            assert all(p["chunk"] <= r["chunk"] - 2 for p in r["retrieved"])
            assert abs(sum(p["weight"] for p in r["retrieved"]) - 1) < 1e-5
    assert os.path.getsize(os.path.join(out, "retrieval.png")) > 0


@pytest.mark.parametrize(
    "cli, args, capability",
    [
        (generate_cli, ["--prompt", "Hi", "--max_new_tokens", "2"], "incremental decoding"),
        (inspect_cli, ["--text", "some text", "--out", "OUT"], "retrieval records per chunk"),
    ],
)
def test_a_command_the_model_cannot_serve_names_model_and_capability(
    cli, args, capability, capsys, tmp_path
):
    args = [str(tmp_path) if a == "OUT" else a for a in args]
    assert cli.main(SCORE_ONLY + args) == 2
    err = capsys.readouterr().err
    assert f"model_type='dummy_bag' (CausalBagLM) does not support {capability}" in err
    assert "Traceback" not in err


def test_offload_needs_segmented_prefill():
    args = _common.parser("test", "").parse_args(SCORE_ONLY + ["--offload"])
    with pytest.raises(MissingCapabilityError, match="model_type='dummy_bag'.*segmented.*prefill"):
        _common.setup(args)
    args = _common.parser("test", "").parse_args(SCORE_ONLY)
    scorer, cfg, _ = _common.setup(args)  # without --offload: one full forward per sequence
    assert type(scorer).__name__ == "FullForwardScorer" and cfg.model.model_type == "dummy_bag"
    args = _common.parser("test", "").parse_args(SWA)
    scorer, _, _ = _common.setup(args)  # the sliding-window LM's own constant-memory engine
    assert type(scorer).__name__ == "SlidingWindowEngine"
