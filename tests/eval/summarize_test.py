"""Summarization end to end: `python -m train` with data.task=summarization on the tiny config,
then `python -m eval.summarize` on its checkpoint (and on a random sliding-window LM), errors."""

import json
import os

import pytest

from eval import summarize as summarize_cli
from train import __main__ as train_cli

TINY = ["--config", "configs/tiny.yaml"]
FAST = ["--batch_size", "2", "--max_new_tokens", "4", "--samples", "2"]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    for split, n in (("train", 12), ("test", 4)):
        with open(root / f"{split}.jsonl", "w") as f:
            for i in range(n):
                row = {"document": f"Manual {i} of {split}. " * (i + 2), "summary": f"manual {i}"}
                f.write(json.dumps({**row, "source": f"fake:{i}"}) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def trained(pairs_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    argv = TINY + ["--output_dir", out, "--fresh", "data.task=summarization"]
    argv += [f"data.summary_dir={pairs_dir}", "data.max_summary_len=32", "data.answer_weight=4"]
    argv += ["train.steps=2", "train.warmup_steps=0", "train.log_every=1", "train.save_every=2"]
    assert train_cli.main(argv) == 0
    return out


def test_train_on_pairs_then_summarize_the_test_split(trained, tmp_path, capsys):
    rows = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    out = str(tmp_path / "scores")
    argv = ["--checkpoint", trained, "--split", "test", "--out", out, *FAST]
    assert summarize_cli.main(argv) == 0
    printed = capsys.readouterr()
    assert (
        "model: checkpoint step 2" in printed.out
        and "| text (rouge-score, stemmed) | rouge1 |" in printed.out
    )
    assert "2/2" in printed.err and "tokens_per_s" in printed.err  # progress
    scores = json.load(open(os.path.join(out, "scores.json")))
    assert scores["step"] == 2 and scores["examples"] == 2 and scores["chunk_len"] == 15
    assert scores["decoding"] == {"top_k": 2, "top_p": 1.0, "temperature": 1.0, "seed": 1}
    assert set(scores["rouge_text"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert set(scores["rouge_tokens"]) == {"rouge1", "rouge2", "rougeL"}
    for s in (*scores["rouge_text"].values(), *scores["rouge_tokens"].values()):
        assert 0 <= s["lo"] <= s["mean"] <= s["hi"] <= 100
    assert len(scores["predictions"]) == 2 and scores["generation"]["new_tokens"] > 0
    examples = open(os.path.join(out, "examples.md")).read()
    assert "**Reference:** manual 0" in examples and "## Example 2" in examples


def test_summarize_a_random_sliding_window_lm_greedily(pairs_dir, tmp_path):
    out = str(tmp_path / "swa")
    argv = ["--random_init", *TINY, "model.model_type=swa_lm", "model.retrieval=null"]
    argv += ["--pairs", pairs_dir, "--split", "train", "--greedy", "--out", out, *FAST]
    assert summarize_cli.main(argv) == 0
    scores = json.load(open(os.path.join(out, "scores.json")))
    assert scores["random_init"] and scores["chunk_len"] == 64  # no chunks: 64
    assert scores["decoding"]["top_k"] == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "validation"], "has no validation.jsonl"),
        (["--top_k", "1"], "use --greedy"),
        (["--top_p", "1.5"], "must be in (0, 1)"),
        (["--batch_size", "0"], "--batch_size 0 is too small"),
    ],
)
def test_errors_are_one_line(pairs_dir, tmp_path, capsys, extra, message):
    argv = ["--random_init", *TINY, "--pairs", pairs_dir, "--out", str(tmp_path), *extra]
    assert summarize_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_pairs_is_an_error(tmp_path, capsys):
    argv = ["--random_init", *TINY, "--out", str(tmp_path)]
    assert summarize_cli.main(argv) == 2
    assert "pass --pairs DIR" in capsys.readouterr().err
    argv = TINY + ["--output_dir", str(tmp_path / "r"), "data.task=summarization"]
    assert train_cli.main(argv) == 2
    assert "data.summary_dir: must be set for data.task=summarization" in capsys.readouterr().err
    argv += [f"data.summary_dir={tmp_path / 'none'}"]
    assert train_cli.main(argv) == 2
    assert "is not a directory" in capsys.readouterr().err
