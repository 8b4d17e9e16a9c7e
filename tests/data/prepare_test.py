import gzip
import json
import os

import numpy as np
import pytest
from datatest_helpers import corpus_documents, make_docs, write_docs

from gca_jax.data import TokenStream, load_tokenizer, prepare, read_manifest


def test_text_round_trip_bytes(byte_corpus, docs):
    manifest = read_manifest(byte_corpus)
    assert manifest["num_documents"] == len(docs)
    assert manifest["num_tokens"] == sum(len(d.encode()) + 1 for d in docs)
    assert len(manifest["shards"]) == 4 and manifest["skipped"] == {}
    assert manifest["token_dtype"] == "uint16"
    assert corpus_documents(byte_corpus) == docs


def test_text_round_trip_bpe(tmp_path, docs, tiny_bpe_path):
    write_docs(tmp_path / "in", docs[:8])
    out = tmp_path / "c"
    manifest = prepare.prepare_corpus(
        [str(tmp_path / "in")], out, format="text", tokenizer=tiny_bpe_path
    )
    assert manifest["tokenizer"] == load_tokenizer(tiny_bpe_path).identity
    assert os.path.isfile(out / "tokenizer.json")  # The corpus carries its tokenizer.
    assert corpus_documents(out) == docs[:8]


def test_train_tokenizer_option(tmp_path, docs):
    write_docs(tmp_path / "in", docs[:10])
    out = tmp_path / "c"
    manifest = prepare.prepare_corpus(
        [str(tmp_path / "in")], out, format="text", train_tokenizer_vocab=320
    )
    assert manifest["tokenizer"]["vocab_size"] == 320
    assert load_tokenizer(out).identity == manifest["tokenizer"]
    assert corpus_documents(out) == docs[:10]


def test_pg19_layout_and_split(tmp_path, docs):
    write_docs(tmp_path / "pg19" / "train", docs[:3], names=["10.txt", "2.txt", "README.md"])
    write_docs(tmp_path / "pg19" / "validation", docs[3:5], names=["7.txt", "8.txt"])
    out = tmp_path / "val"
    prepare.prepare_corpus([str(tmp_path / "pg19")], out, format="pg19", split="validation")
    assert corpus_documents(out) == docs[3:5]
    out = tmp_path / "train"
    prepare.prepare_corpus([str(tmp_path / "pg19")], out, format="pg19", split="train")
    assert corpus_documents(out) == [docs[0], docs[1]]  # Sorted names; README.md is not a book.


def test_jsonl_and_gzip_with_bad_lines(tmp_path, docs):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "a.jsonl", "w") as f:
        for d in docs[:3]:
            f.write(json.dumps({"body": d}) + "\n")
        f.write("{broken\n")
        f.write(json.dumps({"other": 1}) + "\n")
        f.write(json.dumps({"body": "   "}) + "\n")
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt") as f:
        for d in docs[3:5]:
            f.write(json.dumps({"body": d}) + "\n")
    out = tmp_path / "c"
    manifest = prepare.prepare_corpus(
        [str(tmp_path / "in")], out, format="jsonl", text_field="body"
    )
    assert corpus_documents(out) == docs[:5]
    assert manifest["skipped"] == {"bad_record": 2, "empty": 1}


def test_proofpile_keeps_arxiv_only(tmp_path, docs):
    (tmp_path / "pp" / "train").mkdir(parents=True)
    rows = [
        {"text": docs[0], "meta": {"config": "arxiv"}},
        {"text": docs[1], "meta": {"config": "books"}},
        {"text": docs[2], "meta": json.dumps({"config": "arxiv"})},
    ]
    with gzip.open(tmp_path / "pp" / "train" / "proofpile_train_0.jsonl.gz", "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    out = tmp_path / "c"
    manifest = prepare.prepare_corpus([str(tmp_path / "pp")], out, format="proofpile")
    assert corpus_documents(out) == [docs[0], docs[2]]
    assert manifest["skipped"] == {"filtered": 1}


@pytest.mark.parametrize("dataset,column", [("pg19", "text"), ("xsum", "document")])
def test_parquet_columns(tmp_path, docs, dataset, column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    table = pa.table({column: docs[:4] + [""], "id": list(range(5))})
    pq.write_table(table, tmp_path / "pq" / "train-00000-of-00001.parquet")
    out = tmp_path / "c"
    manifest = prepare.prepare_corpus(
        [str(tmp_path / "pq")], out, format="parquet", text_field=column
    )
    assert corpus_documents(out) == docs[:4]
    assert manifest["skipped"] == {"empty": 1}
    with pytest.raises(ValueError, match="has no column text_field='summary'"):
        prepare.prepare_corpus(
            [str(tmp_path / "pq")], tmp_path / "d", format="parquet", text_field="summary"
        )


def test_bad_files_are_counted_skips(tmp_path, docs):
    write_docs(tmp_path / "in", docs[:2])
    (tmp_path / "in" / "empty.txt").write_text("")
    (tmp_path / "in" / "blank.txt").write_text("  \n\n")
    (tmp_path / "in" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    manifest = prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "c", format="text")
    assert manifest["num_documents"] == 2
    assert manifest["skipped"] == {"empty": 2, "undecodable": 1}


def test_errors_before_any_work(tmp_path, docs, tiny_bpe_path):
    with pytest.raises(ValueError, match="does not exist"):
        prepare.prepare_corpus([str(tmp_path / "nope")], tmp_path / "c", format="text")
    with pytest.raises(ValueError, match="format='epub' is unknown"):
        prepare.prepare_corpus([str(tmp_path)], tmp_path / "c", format="epub")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="hold no input files"):
        prepare.prepare_corpus([str(tmp_path / "emptydir")], tmp_path / "c", format="text")
    assert not os.path.exists(tmp_path / "c")
    write_docs(tmp_path / "in", docs[:2])
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "c", format="text")
    with pytest.raises(ValueError, match="different tokenizer.*vocab_size: corpus=259 vs"):
        prepare.prepare_corpus(
            [str(tmp_path / "in")], tmp_path / "c", format="text", tokenizer=tiny_bpe_path
        )
    write_docs(tmp_path / "in2", docs[2:4])
    with pytest.raises(ValueError, match="other inputs or options"):
        prepare.prepare_corpus([str(tmp_path / "in2")], tmp_path / "c", format="text")


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes(tmp_path, docs):
    write_docs(tmp_path / "in", docs[:10])
    args = ([str(tmp_path / "in")],)
    kwargs = dict(format="text", files_per_shard=2)
    done = []

    def crash_after_three(result, total):
        done.append(result.index)
        if len(done) == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        prepare.prepare_corpus(*args, tmp_path / "c", progress=crash_after_three, **kwargs)
    with pytest.raises(ValueError, match="only partly prepared"):
        read_manifest(tmp_path / "c")
    # Simulate a crash in the middle of a shard: a leftover temporary file and no marker.
    (tmp_path / "c" / "shard-00004.array_record.tmp").write_bytes(b"garbage")
    seen = []
    manifest = prepare.prepare_corpus(
        *args, tmp_path / "c", progress=lambda r, t: seen.append(r.reused), **kwargs
    )
    assert manifest["shards_reused"] == 3 and seen.count(False) == 2
    assert corpus_documents(tmp_path / "c") == docs[:10]
    # A shard whose marker is lost is redone; the others are kept.
    os.remove(tmp_path / "c" / "shard-00001.array_record.done.json")
    manifest = prepare.prepare_corpus(*args, tmp_path / "c", **kwargs)
    assert manifest["shards_reused"] == 4
    clean = prepare.prepare_corpus(*args, tmp_path / "clean", **kwargs)
    for name in ("num_documents", "num_tokens", "shards", "tokenizer"):
        assert manifest[name] == clean[name]


def test_worker_processes_match_serial(tmp_path, docs, tiny_bpe_path):
    write_docs(tmp_path / "in", docs[:12])
    kw = dict(format="text", files_per_shard=3, tokenizer=tiny_bpe_path)
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "a", num_workers=1, **kw)
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "b", num_workers=2, **kw)
    a, b = TokenStream(tmp_path / "a"), TokenStream(tmp_path / "b")
    np.testing.assert_array_equal(a.read(0, a.num_tokens), b.read(0, b.num_tokens))


def test_cli_end_to_end(tmp_path, capsys):
    from train import prepare as cli

    assert cli.main(["--format", "builtin", "--out", str(tmp_path / "c")]) == 0
    assert "documents" in capsys.readouterr().out
    assert cli.main(["--format", "text", str(tmp_path / "missing"), "--out", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_make_docs_is_deterministic():
    assert make_docs(3) == make_docs(3)


def test_text_holdout_splits_are_disjoint(tmp_path, docs):
    write_docs(tmp_path / "in", docs[:10])
    kw = dict(format="text", holdout_every=4)
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "v", split="validation", **kw)
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "t", split="train", **kw)
    assert corpus_documents(tmp_path / "v") == [docs[0], docs[4], docs[8]]
    assert sorted(corpus_documents(tmp_path / "t") + corpus_documents(tmp_path / "v")) == sorted(
        docs[:10]
    )
    with pytest.raises(ValueError, match="holdout_every=4 needs format='text'"):
        prepare.prepare_corpus(
            [str(tmp_path / "in")], tmp_path / "x", format="pg19", holdout_every=4
        )


def test_truncated_gzip_keeps_earliercorpus_documents(tmp_path, docs):
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "full.jsonl.gz", "wt") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    data = (tmp_path / "full.jsonl.gz").read_bytes()
    (tmp_path / "in" / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    manifest = prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "c", format="jsonl")
    assert 0 < manifest["num_documents"] < len(docs)
    assert manifest["skipped"] == {"unreadable": 1}
    assert corpus_documents(tmp_path / "c") == docs[: manifest["num_documents"]]


def test_mismatched_tokenizer_leaves_directory_untouched(tmp_path, docs, tiny_bpe_path):
    write_docs(tmp_path / "in", docs[:2])
    prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "c", format="text")
    before = sorted(os.listdir(tmp_path / "c"))
    with pytest.raises(ValueError, match="different tokenizer"):
        prepare.prepare_corpus(
            [str(tmp_path / "in")], tmp_path / "c", format="text", tokenizer=tiny_bpe_path
        )
    with pytest.raises(ValueError, match="prepared without a trained tokenizer"):
        prepare.prepare_corpus(
            [str(tmp_path / "in")], tmp_path / "c", format="text", train_tokenizer_vocab=300
        )
    assert sorted(os.listdir(tmp_path / "c")) == before


def test_no_usable_document_raises_and_removes_only_what_it_wrote(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "zeros.bin").write_bytes(b"\0" * 64)  # valid UTF-8, but binary
    (tmp_path / "in" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"no usable document.*binary=1, undecodable=1"):
        prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "new", format="text")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.md").write_text("the user's file")
    with pytest.raises(ValueError, match="no usable document"):
        prepare.prepare_corpus([str(tmp_path / "in")], tmp_path / "kept", format="text")
    assert os.listdir(tmp_path / "kept") == ["notes.md"]


def test_config_lines_name_the_model_keys_and_the_splits():
    ident = {"kind": "hf", "vocab_size": 50265, "pad_id": 50257, "landmark_id": 50264}
    made = {f"c/{s}": {"tokenizer": ident, "split": s} for s in ("train", "validation", "test")}
    assert prepare.config_lines(made, "gpt2") == [
        "model.vocab_size: 50265",
        "model.pad_id: 50257",
        "model.landmark_id: 50264",
        "data.tokenizer: gpt2",
        "data.corpus_dir: c/train",
        "data.eval_corpus_dir: c/validation",
    ]
    one = {"c/v": {"tokenizer": ident, "split": "validation"}}
    assert prepare.config_lines(one)[3:] == [
        "data.tokenizer: c/v/tokenizer.json",
        "data.corpus_dir: c/v",
    ]
