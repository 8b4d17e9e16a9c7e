"""The source registry: one list of formats for the library, the CLI and the docs; option checks."""

import json
import pathlib

import pytest

from gca_jax.data import sources
from gca_jax.data.sources import proofpile

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_unknown_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="format='epub' is unknown") as e:
        sources.plan_shards([str(tmp_path)], format="epub")
    for name in sources.FORMATS:
        assert repr(name) in str(e.value)


def test_registry_keys_are_the_source_names():
    assert sources.FORMATS == tuple(sources.SOURCES)
    for name, source in sources.SOURCES.items():
        assert source.name == name and source.inputs and source.notes


def test_docs_table_is_the_registry():
    lines = DOCS.read_text().splitlines()
    start = lines.index("| format | inputs | notes |") + 2  # Skip the header and its rule.
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(tuple(cell.strip() for cell in line.strip("|").split("|")))
    expected = [(f"`{s.name}`", s.inputs, s.notes) for s in sources.SOURCES.values()]
    assert rows == expected, "docs/data.md §3's table must list sources.SOURCES, in order"


def test_cli_lists_the_registry(capsys):
    from train import prepare as cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for source in sources.SOURCES.values():
        assert f"{source.inputs}: {source.notes}" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["--format", "epub", "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'epub'" in err and all(repr(f) in err for f in sources.FORMATS)


@pytest.mark.parametrize(
    "format,option,message",
    [
        ("text", {"text_field": "body"}, r"text_field='body' needs format in \('jsonl', "),
        ("pg19", {"holdout_every": 3}, "holdout_every=3 needs format='text', got format='pg19'"),
        ("jsonl", {"data_dir": "/d"}, "data_dir='/d' needs format='tfds', got format='jsonl'"),
        ("parquet", {"manual_dir": "/m"}, "manual_dir='/m' needs format='tfds'"),
        ("builtin", {"text_field": "t"}, "needs format in .*got format='builtin'"),
    ],
)
def test_an_option_the_format_ignores_is_an_error(tmp_path, format, option, message):
    (tmp_path / "a.txt").write_text("x")
    inputs = [] if format == "builtin" else [str(tmp_path)]
    with pytest.raises(ValueError, match=message):
        sources.plan_shards(inputs, format=format, **option)


def test_holdout_needs_a_two_way_split(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="holdout_every=2 needs split in"):
        sources.plan_shards([str(tmp_path)], format="text", holdout_every=2, split="test")
    with pytest.raises(ValueError, match="holdout_every=-1 must be >= 0"):
        sources.plan_shards([str(tmp_path)], format="text", holdout_every=-1)


def test_builtin_takes_no_inputs(tmp_path):
    with pytest.raises(ValueError, match="format 'builtin' takes no inputs"):
        sources.plan_shards([str(tmp_path)], format="builtin")
    with pytest.raises(ValueError, match="split='test' must be one of"):
        sources.plan_shards([], format="builtin", split="test")


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({"config": "arxiv"}, True),
        (json.dumps({"config": "arxiv", "file": "x.tex"}), True),  # Some copies store a string.
        ({"config": "books"}, False),
        (json.dumps({"config": "stack-exchange"}), False),
        ("{'config': 'arxiv'}", False),  # Not JSON: cannot be shown to be arXiv; the old builder
        ("", False),  # raised on these and aborted the whole tfds build.
        (json.dumps(["arxiv"]), False),
        (None, False),
        ({"config": "ArXiv"}, False),
    ],
)
def test_is_arxiv(meta, expected):
    assert proofpile.is_arxiv({"text": "t", "meta": meta}) is expected
    assert proofpile.is_arxiv({"text": "t"}) is False
