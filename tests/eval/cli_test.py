"""eval.generate and eval.inspect_retrieval end to end on the tiny config, and their errors."""

import json
import os

from eval import _common
from eval import generate as generate_cli
from eval import inspect_retrieval as inspect_cli


def test_generate_streams_text(capsys):
    argv = ["--config", "configs/tiny.yaml", "--prompt", "The answer is", "--max_new_tokens", "20"]
    assert _common.run(generate_cli.main, argv) == 0
    assert capsys.readouterr().out.startswith("The answer is")


def test_generate_rejects_empty_prompt(capsys):
    argv = ["--config", "configs/tiny.yaml", "--prompt", "", "--max_new_tokens", "5"]
    assert _common.run(generate_cli.main, argv) == 2
    assert "empty" in capsys.readouterr().err


def test_inspect_retrieval_json_and_heatmap(tmp_path):
    out = str(tmp_path / "insp")
    text = "Chunks of text that retrieve earlier chunks. " * 8  # 360 bytes: 24 chunks
    argv = ["--config", "configs/tiny.yaml", "--text", text, "--out", out]
    assert _common.run(inspect_cli.main, argv) == 0
    result = json.load(open(os.path.join(out, "retrieval.json")))
    assert len(result["groups"]) == 2 and len(result["chunks"]) == 24
    for rows in result["groups"]:
        assert rows[0]["retrieved"] == [] and rows[1]["retrieved"] == []
        for r in rows[2:]:
            assert all(p["chunk"] <= r["chunk"] - 2 for p in r["retrieved"])
            assert abs(sum(p["weight"] for p in r["retrieved"]) - 1) < 1e-5
    assert os.path.getsize(os.path.join(out, "retrieval.png")) > 0
