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


# -- the synopsis pairs recipe (gca_jax.data.synopsis) ----------------------------------------

PY_PAGE = """:mod:`abc` --- Abstract Base Classes
====================================

.. module:: abc
   :synopsis: Abstract base classes according to :pep:`3119`,
              with :class:`~collections.abc.Sized` and ``len``.

.. moduleauthor:: Someone

Body of the abc page.

.. module:: abc.extra
   :synopsis: A second module of the page.

More text.
"""

POD = """=encoding utf8

=head1 NAME
X<function>

perlfoo - tutorial on C<pack> and B<unpack>

=head1 DESCRIPTION

The foo manual.
"""


def _pairs_root(tmp_path):
    """A perl-doc and a python3.11-doc tree: 30 manuals, 30 pages (every third without)."""
    from gca_jax.data.sources import perldoc, pythondoc  # noqa: F401 (layouts)

    pod = tmp_path / "usr/share/perl/5.36.0/pod"
    src = tmp_path / "usr/share/doc/python3.11/html/_sources/library"
    pod.mkdir(parents=True)
    src.mkdir(parents=True)
    for i in range(30):
        text = POD.replace("perlfoo", f"perl{i}").replace("foo manual", f"manual {i}")
        (pod / f"perl{i}.pod").write_text(text if i % 10 else "=head1 DESCRIPTION\n\nNo name.\n")
        page = PY_PAGE.replace("abc page", f"page {i}")
        (src / f"m{i}.rst.txt").write_text(page if i % 3 else f"Page {i} without a synopsis.\n")
    (pod / "perldup.pod").write_text((pod / "perl1.pod").read_text())  # A duplicate document.
    return tmp_path


def test_pair_extraction_cleans_markup():
    from gca_jax.data import synopsis

    document, summary = synopsis.python_pair(PY_PAGE)
    assert summary == "Abstract base classes according to PEP 3119, with Sized and len."
    assert ":synopsis:" not in document and "with :class:" not in document
    assert "Body of the abc page." in document and ".. module:: abc.extra" in document
    document, summary = synopsis.perl_pair(POD)
    assert summary == "tutorial on pack and unpack"
    assert "=head1 NAME" not in document and "perlfoo" not in document
    assert document.startswith("=encoding utf8") and "The foo manual." in document
    assert synopsis.perl_pair("=head1 NAME\n\nno dash here\n") is None
    assert synopsis.python_pair("no module\n") is None
    assert synopsis.clean_pod("C<< $x->y >> and L<perlfunc|perlfunc/x> E<lt>") == (
        "$x->y and perlfunc lt"
    )


def test_synopsis_recipe_end_to_end(tmp_path, capsys):
    from gca_jax.data import synopsis
    from gca_jax.data.sources import splits
    from train import prepare as prepare_cli

    root = _pairs_root(tmp_path)
    out = tmp_path / "pairs"
    assert prepare_cli.main(["--recipe", "synopsis", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped: {'duplicate': 1, 'no_summary': 13}" in printed
    pairs = {
        s: summarization.read_pairs(out / f"{s}.jsonl", dataset="synopsis") for s in splits.SPLITS
    }
    rows = {s: [json.loads(line) for line in open(out / f"{s}.jsonl")] for s in splits.SPLITS}
    # 31 manuals less 3 without NAME and the duplicate; 30 pages less 10 without a synopsis.
    assert sum(len(p) for p in pairs.values()) == 27 + 20
    # Each pair's split is its document's split among all the part's files (the tech corpus's).
    pod_split = splits.assign([f"perl{i}.pod" for i in range(30)] + ["perldup.pod"])
    page_split = splits.assign([f"library/m{i}.rst.txt" for i in range(30)])
    for split, split_rows in rows.items():
        assert [r["source"] for r in split_rows] == sorted(r["source"] for r in split_rows)
        for r in split_rows:
            fmt, name = r["source"].split(":", 1)
            assert (pod_split if fmt == "perldoc" else page_split)[name] == split
            assert set(r) == {"document", "summary", "source"}
    manifest = json.load(open(out / "manifest.json"))
    assert {s: c["pairs"] for s, c in manifest["splits"].items()} == {
        s: len(p) for s, p in pairs.items()
    }
    first = open(out / "train.jsonl").read()
    synopsis.prepare_pairs(root, out)  # Deterministic: the same bytes again.
    assert open(out / "train.jsonl").read() == first
    assert summarization.read_split(out, "test") == pairs["test"]


def test_synopsis_recipe_errors(tmp_path, capsys):
    from train import prepare as prepare_cli

    assert (
        prepare_cli.main(["--recipe", "synopsis", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    assert "--fetch-packages synopsis" in capsys.readouterr().err


def test_read_split_finds_xsum_and_cnn_parquet_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"document": ["d1", "d2"], "summary": ["s1", "s2"], "id": ["1", "2"]}),
        tmp_path / "test-00000-of-00002.parquet",
    )
    pq.write_table(
        pa.table({"document": ["d3"], "summary": ["s3"], "id": ["3"]}),
        tmp_path / "test-00001-of-00002.parquet",
    )
    assert summarization.read_split(tmp_path, "test") == [("d1", "s1"), ("d2", "s2"), ("d3", "s3")]
    cnn = tmp_path / "cnn"
    cnn.mkdir()
    pq.write_table(pa.table({"article": ["a"], "highlights": ["h"]}), cnn / "train.parquet")
    assert summarization.read_split(cnn, "train") == [("a", "h")]
    with pytest.raises(ValueError, match="has no validation.jsonl"):
        summarization.read_split(cnn, "validation")
    with pytest.raises(ValueError, match="is not a directory"):
        summarization.read_split(tmp_path / "missing", "train")


# -- training batches ---------------------------------------------------------------------------


def _train_pairs(n=5):
    return [(f"Document {i}. " * (i + 2), f"sum {i}") for i in range(n)]


def test_training_batches_are_formatted_and_masked():
    tok = load_tokenizer("bytes")
    fmt = summarization.SummarizationFormat.from_tokenizer(
        tok, max_len=120, max_sum_len=16, chunk_size=15
    )
    pairs = _train_pairs()
    ds = summarization.make_summarization_train_dataset(pairs, tok, fmt, batch_size=5, seed=3)
    it = iter(ds)
    batch = next(it)
    assert (
        batch["tokens"].shape == batch["loss_mask"].shape == batch["answer_mask"].shape == (5, 120)
    )
    seen = set()
    for row, mask, answer in zip(batch["tokens"], batch["loss_mask"], batch["answer_mask"]):
        start = int(np.flatnonzero(answer)[0])
        assert start % 15 == 1  # The summary starts at slot 1 of a chunk.
        text = tok.decode(row[mask])
        doc, summary = text.split("|Summary:")
        seen.add(doc)
        assert (doc, summary) in pairs  # Exactly one pair, document + cue + summary (+ EOT).
        assert tok.decode(row[answer]) == summary and row[answer][-1] == tok.eot_id
        assert (row[~mask] == tok.pad_id).all()
    assert len(seen) == 5  # One epoch shows every pair once.
    state = it.get_state()
    after = next(it)
    it2 = iter(
        summarization.make_summarization_train_dataset(pairs, tok, fmt, batch_size=5, seed=3)
    )
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["tokens"], after["tokens"])  # Exact resume.


def test_generation_prompt_cut_matches_training_prompt():
    tok = load_tokenizer("bytes")
    fmt = summarization.SummarizationFormat.from_tokenizer(
        tok, max_len=120, max_sum_len=16, chunk_size=15
    )
    doc, summary = np.arange(65, 65 + 26).repeat(8), tok.encode("a summary of 16!")  # max_sum_len
    train = summarization.format_example(doc, summary, fmt)
    prompt, first = summarization.generation_prompt(doc, fmt, max_prompt_len=120 - 16 - 1)
    p = train["prompt_len"]
    np.testing.assert_array_equal(prompt, train["tokens"][: p - 1])
    assert first == train["tokens"][p - 1] == ord(":")
    full, _ = summarization.generation_prompt(doc, fmt)  # No cut: the whole document.
    assert full.shape[0] > prompt.shape[0] and full.shape[0] % 15 == 0
    with pytest.raises(ValueError, match="leaves no room"):
        summarization.generation_prompt(doc, fmt, max_prompt_len=5)
