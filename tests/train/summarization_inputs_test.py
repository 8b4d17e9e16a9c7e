"""data.task=summarization through the trainer's input pipeline: masked ids and summary weights."""

import json

import numpy as np
import pytest

from gca_jax.config import ConfigError
from gca_jax.training import inputs
from tests.train.conftest import tiny_config


def test_train_iterator_yields_masked_weighted_batches(tmp_path):
    with open(tmp_path / "train.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"document": f"Doc {i}. " * (i + 1), "summary": f"s{i}"}) + "\n")
    cfg = tiny_config(
        "data.task=summarization",
        f"data.summary_dir={tmp_path}",
        "data.max_summary_len=16",
        "data.answer_weight=5",
    )
    assert inputs.resolve_corpora(cfg, str(tmp_path / "work"))[0] is None  # no LM corpus
    batch = next(inputs.train_iterator(cfg, None))
    tokens, weights = batch["tokens"], batch["weights"]
    assert tokens.shape == weights.shape == (cfg.data.batch_size, cfg.data.seq_len)
    for row, w in zip(tokens, weights):
        real = np.flatnonzero(row >= 0)
        assert (row[: real[0]] == -1).all() and (row[real[-1] + 1 :] == -1).all()  # pads -> -1
        summary = np.flatnonzero(w == 5)
        assert row[summary[-1]] == 256 and summary[-1] == real[-1]  # ends with EOT
        assert summary[0] % cfg.summary_chunk_len == 1  # slot 1 of a chunk
        assert bytes(row[summary[:-1]].astype(np.uint8)).decode().startswith("s")
        assert (w[w != 5] == 1).all()


def test_summarization_needs_room_for_the_format(tmp_path):
    with pytest.raises(ConfigError, match="data.seq_len=120: must be >= data.max_summary_len"):
        tiny_config("data.task=summarization", f"data.summary_dir={tmp_path}")
    with pytest.raises(ConfigError, match="data.niah_fraction=0.5: must be 0"):
        tiny_config(
            "data.task=summarization", f"data.summary_dir={tmp_path}", "data.niah_fraction=0.5",
            "data.max_summary_len=16",
        )  # fmt: skip
