import gzip
import json

import pytest
from datatest_helpers import corpus_documents, write_docs

from gca_jax.data import prepare, read_manifest

pytest.importorskip("tensorflow_datasets")


def test_local_pg19_builder_then_prepare(tmp_path, docs):
    write_docs(tmp_path / "manual" / "train", docs[:4], names=[f"{i}.txt" for i in range(4)])
    write_docs(tmp_path / "manual" / "validation", docs[4:5], names=["99.txt"])
    data_dir = str(tmp_path / "tfds")
    manifest = prepare.prepare_corpus(
        ["local_pg19"],
        tmp_path / "c",
        format="tfds",
        data_dir=data_dir,
        manual_dir=str(tmp_path / "manual"),
        records_per_shard=3,
    )
    assert manifest["num_documents"] == 4 and len(manifest["shards"]) == 2
    # Once prepared, any tfds dataset in data_dir is read without manual_dir.
    manifest = prepare.prepare_corpus(
        ["local_pg19"], tmp_path / "v", format="tfds", data_dir=data_dir, split="validation"
    )
    assert manifest["num_tokens"] == len(docs[4].encode()) + 1
    assert read_manifest(tmp_path / "v")["split"] == "validation"
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        prepare.prepare_corpus(
            ["local_pg19"], tmp_path / "t", format="tfds", data_dir=data_dir, split="test"
        )
    with pytest.raises(ValueError, match="has no text_field='body'"):
        prepare.prepare_corpus(
            ["local_pg19"], tmp_path / "t", format="tfds", data_dir=data_dir, text_field="body"
        )


def test_local_proofpile_keeps_arxiv(tmp_path, docs):
    (tmp_path / "manual" / "train").mkdir(parents=True)
    with gzip.open(tmp_path / "manual" / "train" / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": docs[0], "meta": {"config": "arxiv"}}) + "\n")
        f.write(json.dumps({"text": docs[1], "meta": {"config": "stack-exchange"}}) + "\n")
    manifest = prepare.prepare_corpus(
        ["local_proofpile"],
        tmp_path / "c",
        format="tfds",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(tmp_path / "manual"),
    )
    assert manifest["num_documents"] == 1


def test_local_proofpile_matches_the_proofpile_format(tmp_path, docs):
    # One arXiv filter for both routes: the builder used to abort on the malformed meta string and
    # the bad lines below, where `--format proofpile` skipped them.
    (tmp_path / "manual" / "train").mkdir(parents=True)
    lines = [
        json.dumps({"text": docs[0], "meta": {"config": "arxiv"}}),
        json.dumps({"text": docs[1], "meta": "{'config': 'arxiv'}"}),  # Not JSON: not arXiv.
        json.dumps({"text": docs[2], "meta": json.dumps({"config": "arxiv"})}),
        "{broken",
        json.dumps({"meta": {"config": "arxiv"}}),  # No text.
        json.dumps({"text": "  ", "meta": {"config": "arxiv"}}),
        json.dumps({"text": docs[3], "meta": {"config": "books"}}),
    ]
    with gzip.open(tmp_path / "manual" / "train" / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    direct = prepare.prepare_corpus([str(tmp_path / "manual")], tmp_path / "p", format="proofpile")
    assert direct["skipped"] == {"filtered": 2, "bad_record": 2, "empty": 1}
    prepare.prepare_corpus(
        ["local_proofpile"],
        tmp_path / "t",
        format="tfds",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(tmp_path / "manual"),
    )
    assert corpus_documents(tmp_path / "p") == [docs[0], docs[2]]
    # tfds orders the examples by a hash of their keys.
    assert sorted(corpus_documents(tmp_path / "t")) == [docs[0], docs[2]]


def test_tfds_errors(tmp_path):
    with pytest.raises(ValueError, match="is not prepared"):
        prepare.prepare_corpus(
            ["local_pg19"], tmp_path / "c", format="tfds", data_dir=str(tmp_path / "empty")
        )
    with pytest.raises(ValueError, match="exactly one dataset name"):
        prepare.prepare_corpus(["a", "b"], tmp_path / "c", format="tfds")
