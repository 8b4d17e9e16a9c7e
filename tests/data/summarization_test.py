import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gca_jax.data import load_tokenizer, summarization


def _fmt(**kw):
    return summarization.SummarizationFormat(
        cue=np.array([900, 901, 902], np.int32), eot_id=999, pad_id=998, **kw
    )


def test_short_example_matches_original_layout():
    fmt = _fmt(max_len=24, max_sum_len=8, chunk_size=4)
    out = summarization.format_example(np.arange(6), [50, 51], fmt)
    # prompt = 6 + 3 = 9 ids -> left-padded to ceil(9 / 4) * 4 + 1 = 13.
    assert out["prompt_len"] == 13
    expected = [998] * 4 + list(range(6)) + [900, 901, 902] + [50, 51, 999] + [998] * 8
    np.testing.assert_array_equal(out["tokens"], expected)
    np.testing.assert_array_equal(out["loss_mask"], np.asarray(expected) != 998)


@pytest.mark.parametrize("doc_len", [10, 40, 1000])
def test_truncation_keeps_the_cue(doc_len):
    fmt = _fmt(max_len=12, max_sum_len=3, chunk_size=4)
    out = summarization.format_example(np.arange(doc_len), [50, 51], fmt)
    p = out["prompt_len"]
    assert p % 4 == 1 and p + 3 <= 12
    np.testing.assert_array_equal(out["tokens"][p - 3 : p], [900, 901, 902])  # The cue survives.
    np.testing.assert_array_equal(out["tokens"][p : p + 3], [50, 51, 999])
    np.testing.assert_array_equal(out["tokens"][: p - 3], np.arange(p - 3))  # Document start kept.


def test_long_summary_keeps_its_end():
    fmt = _fmt(max_len=20, max_sum_len=5, chunk_size=4)  # Budget 14 -> prompt 13.
    out = summarization.format_example(np.arange(30), np.arange(100, 120), fmt)
    p = out["prompt_len"]
    np.testing.assert_array_equal(out["tokens"][p : p + 5], [116, 117, 118, 119, 999])
    np.testing.assert_array_equal(out["tokens"][p - 3 : p], [900, 901, 902])


def test_generation_prompt_holds_out_colon():
    tok = load_tokenizer("bytes")
    fmt = summarization.SummarizationFormat.from_tokenizer(tok, max_len=4095, chunk_size=63)
    prompt, first = summarization.generation_prompt(tok.encode("A short story."), fmt)
    assert prompt.shape[0] % 63 == 0 and first == ord(":")
    assert tok.decode(prompt).endswith("A short story.|Summary")


def test_pairs_from_parquet_and_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"article": ["doc a", "doc b"], "highlights": ["sa", "sb"], "id": ["1", "2"]}),
        tmp_path / "cnn.parquet",
    )
    pairs = summarization.read_pairs(tmp_path / "cnn.parquet", dataset="cnn_dailymail")
    assert pairs == [("doc a", "sa"), ("doc b", "sb")]
    with open(tmp_path / "x.jsonl", "w") as f:
        f.write(json.dumps({"document": "d", "summary": "s"}) + "\n")
    assert summarization.read_pairs(tmp_path / "x.jsonl", dataset="xsum") == [("d", "s")]
    with pytest.raises(ValueError, match="lacks columns"):
        summarization.read_pairs(tmp_path / "cnn.parquet", dataset="xsum")
    tok = load_tokenizer("bytes")
    fmt = summarization.SummarizationFormat.from_tokenizer(
        tok, max_len=126, max_sum_len=32, chunk_size=63
    )
    ds = summarization.make_summarization_dataset(pairs, tok, fmt, seed=0)
    assert len(ds) == 2 and ds[0]["tokens"].shape == (126,)


def test_bad_format_sizes():
    with pytest.raises(ValueError, match="leaves no room for a k \\* chunk_size \\+ 1 prompt"):
        _fmt(max_len=10, max_sum_len=8, chunk_size=4)


@given(
    doc_len=st.integers(0, 300),
    sum_len=st.integers(0, 80),
    chunk_size=st.sampled_from([4, 7, 63, 64]),
    extra=st.integers(0, 200),
)
def test_format_invariants(doc_len, sum_len, chunk_size, extra):
    max_sum_len = 16
    max_len = max_sum_len + 1 + chunk_size + 4 + extra
    fmt = _fmt(max_len=max_len, max_sum_len=max_sum_len, chunk_size=chunk_size)
    out = summarization.format_example(np.arange(doc_len), np.arange(500, 500 + sum_len), fmt)
    p, tokens = out["prompt_len"], out["tokens"]
    assert tokens.shape == (max_len,) and p % chunk_size == 1
    np.testing.assert_array_equal(tokens[p - 3 : p], [900, 901, 902])
    summary = tokens[p:][tokens[p:] != 998]
    assert summary[-1] == 999 and summary.shape[0] <= max(sum_len + 1, max_sum_len)
    doc = tokens[: p - 3][tokens[: p - 3] != 998]
    np.testing.assert_array_equal(doc, np.arange(doc.shape[0]))  # A prefix of the document.
    if doc.shape[0] < doc_len:  # Only cut when the whole example could not fit.
        assert _aligned_len(doc_len + 3, chunk_size) + sum_len + 1 > max_len


def _aligned_len(n, c):
    return -(-n // c) * c + 1
