"""The formats of Debian packages (rdata, kjv, perldoc, linuxdoc, pythondoc), splits and recipes.

Fixtures are small trees laid out like `dpkg -x` output, with files made byte by byte
(rfixtures.py); nothing here downloads.
"""

import collections
import gzip
import subprocess

import numpy as np
import pytest
import rfixtures as rf
from datatest_helpers import corpus_documents, make_docs

from gca_jax.data import recipes, sources
from gca_jax.data.sources import kjv, rdata, splits

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sense")


def _documents(inputs, format, split):
    skipped = collections.Counter()
    tasks = sources.plan_shards(inputs, format=format, split=split, files_per_shard=4)
    return [d for t in tasks for d in sources.iter_documents(t, skipped)], skipped


@pytest.mark.parametrize("clear_after", [None, 700])
def test_lzw_round_trip_across_code_widths(clear_after):
    rng = np.random.default_rng(0)
    words = rng.choice(make_docs(30, seed=3)[0].split(), size=40_000)
    text = " ".join(words).encode() + bytes(range(256)) + b"aaaaaaaaaaaaaaaaaaaaaaaa"  # KwKwK.
    packed = rf.lzw_compress(text, clear_after=clear_after)
    assert len(packed) < len(text) / 2
    assert kjv.lzw_decompress(packed) == text


def _bible_root(tmp_path, verses=3):
    text, _ = rf.bible_text(verses=verses)
    path = tmp_path / "usr" / "lib" / "bible.data"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rf.bible_data(text.encode(), window=512))
    return text


def test_bible_file_decodes_into_books(tmp_path):
    text = _bible_root(tmp_path)
    assert kjv.decode_file(str(tmp_path / kjv.DATA_PATH)) == text
    books = kjv.books(text + "not a verse\n", skipped := collections.Counter())
    assert [name for name, _ in books] == list(kjv.BOOKS) and skipped == {"bad_record": 1}
    assert books[0][1] == (
        "Genesis\n\n1:1 Verse 1 of book 0, and so on.\n1:2 Verse 2 of book 0, and so on.\n"
        "2:3 Verse 3 of book 0, and so on.\n"
    )
    by_split = {s: _documents([str(tmp_path)], "kjv", s)[0] for s in splits.SPLITS}
    assert [len(by_split[s]) for s in splits.SPLITS] == [60, 3, 3]
    assert sorted(sum(by_split.values(), [])) == sorted(text for _, text in books)


def test_bible_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no usr/lib/bible.data"):
        sources.plan_shards([str(tmp_path)], format="kjv")
    (tmp_path / "x.data").write_bytes(b"EC01" + bytes(100))
    with pytest.raises(ValueError, match="is not a bible.data file"):
        kjv.decode_file(str(tmp_path / "x.data"))
    with pytest.raises(ValueError, match="has 2 books, expected 66"):
        kjv.books(rf.bible_text(num_books=2)[0], collections.Counter())


def _austen_root(tmp_path):
    data = tmp_path / rdata.JANEAUSTENR_DATA
    data.mkdir(parents=True)
    novels = {name: [name.upper(), "", f"Text of {name}.", None, "The end."] for name in NOVELS}
    objects = {name: rf.strs(lines) for name, lines in novels.items()}
    objects["austen_years"] = rf.ints([1811, 1813])  # Not text: counted, not a document.
    rf.lazyload(data, objects)
    (data / "Rdata.rds").write_bytes(b"an index, never read")
    return {name: "\n".join(x or "" for x in lines) + "\n" for name, lines in novels.items()}


def test_rdata_novels_split_by_book(tmp_path):
    novels = _austen_root(tmp_path)
    got = {s: _documents([str(tmp_path)], "rdata", s) for s in splits.SPLITS}
    assert [len(got[s][0]) for s in splits.SPLITS] == [4, 1, 1]
    assert sorted(sum((got[s][0] for s in splits.SPLITS), [])) == sorted(novels.values())
    assert got["train"][1] == {"not_text": 1}
    rda = tmp_path / "one.rda"
    rda.write_bytes(rf.rda({"a": rf.strs(["x"]), "b": rf.strs(["y"]), "c": rf.strs(["z"])}))
    assert len(_documents([str(rda)], "rdata", "validation")[0]) == 1


def _docs_root(tmp_path):
    """perl-doc, linux-doc (two versions) and python3.X-doc trees; returns the newest texts."""
    texts = {}
    for version in ("5.9.0", "5.36.0"):
        pod = tmp_path / "usr/share/perl" / version / "pod"
        pod.mkdir(parents=True)
        for i in range(40):
            texts[("perldoc", version, i)] = f"=head1 NAME\n\nperl{i} - manual {i} of {version}\n"
            (pod / f"perl{i}.pod").write_text(texts[("perldoc", version, i)])
    for version in ("6.9", "6.12"):
        doc = tmp_path / f"usr/share/doc/linux-doc-{version}/Documentation/sub"
        doc.mkdir(parents=True)
        for i in range(30):
            text = f"Title {i}\n=======\n\nKernel {version} document {i}.\n"
            texts[("linuxdoc", version, i)] = text
            (doc / f"d{i}.rst.gz").write_bytes(gzip.compress(text.encode()))
        (doc / "d0.rst").write_text(texts[("linuxdoc", version, 0)])  # Plain wins over .gz.
        (doc / "figure.svg.gz").write_bytes(gzip.compress(b"<svg/>"))
    src = tmp_path / "usr/share/doc/python3.11/html/_sources/library"
    src.mkdir(parents=True)
    for i in range(25):
        texts[("pythondoc", "3.11", i)] = f":mod:`m{i}` --- module {i}\n"
        (src / f"m{i}.rst.txt").write_text(texts[("pythondoc", "3.11", i)])
    return texts


@pytest.mark.parametrize(
    "format,version,count",
    [("perldoc", "5.36.0", 40), ("linuxdoc", "6.12", 30), ("pythondoc", "3.11", 25)],
)
def test_documentation_packages(tmp_path, format, version, count):
    texts = _docs_root(tmp_path)
    got = {s: _documents([str(tmp_path)], format, s)[0] for s in splits.SPLITS}
    k = splits.held_out(count)
    assert [len(got[s]) for s in splits.SPLITS] == [count - 2 * k, k, k]
    expected = [texts[(format, version, i)] for i in range(count)]
    assert sorted(sum(got.values(), [])) == sorted(expected)  # Newest version, each file once.


def test_documentation_directory_itself_and_errors(tmp_path):
    _docs_root(tmp_path)
    pod = tmp_path / "usr/share/perl/5.9.0/pod"
    assert len(_documents([str(pod)], "perldoc", "test")[0]) == splits.held_out(40)
    with pytest.raises(ValueError, match="takes directories, got the file"):
        sources.plan_shards([str(pod / "perl1.pod")], format="perldoc")
    with pytest.raises(ValueError, match=r"split='dev' must be one of \('train', "):
        sources.plan_shards([str(pod)], format="perldoc", split="dev")
    (pod / "perl1.pod").write_bytes(b"\xff\xfe not utf-8")
    docs = [_documents([str(pod)], "perldoc", s) for s in splits.SPLITS]
    assert sum(d[1]["undecodable"] for d in docs) == 1


def test_splits_are_stable_and_disjoint():
    names = [f"doc{i}" for i in range(100)]
    of = splits.assign(names)
    assert collections.Counter(of.values()) == {"train": 90, "validation": 5, "test": 5}
    assert splits.assign(list(reversed(names))) == of  # Order does not matter.
    grown = splits.assign(names + ["new"])  # Same k: at most two documents change split.
    assert sum(grown[n] != of[n] for n in names) <= 2
    assert splits.held_out(2) == 0 and splits.held_out(3) == 1 and splits.held_out(66) == 3
    with pytest.raises(ValueError, match="must be distinct"):
        splits.assign(["a", "a"])


def test_recipes_end_to_end(tmp_path, capsys):
    from train import prepare as cli

    root = tmp_path / "root"
    novels, _ = _austen_root(root), _bible_root(root)
    code = cli.main(["--recipe", "books", str(root), "--out", str(tmp_path / "books"),
                     "--tokenizer", "bytes", "--workers", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/books/train: 64 documents" in out
    assert f"{tmp_path}/books/validation: 4 documents" in out
    docs = {s: corpus_documents(tmp_path / "books" / s) for s in splits.SPLITS}
    assert sum(d in docs["train"] for d in novels.values()) == 4
    assert all(len(docs[s]) == 4 for s in ("validation", "test"))
    # The tech recipe needs its packages: the error names the command that fetches them.
    with pytest.raises(ValueError, match="--fetch-packages tech"):
        recipes.plan_recipe("tech", root, "train")
    assert cli.main(["--recipe", "tech", str(root), "--out", str(tmp_path / "t")]) == 2
    assert "perl-doc for format 'perldoc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--recipe", "books", "--out", "x", "--split", "test"])


def test_fetch_packages_runs_apt_and_dpkg(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs.get("cwd")))
        if cmd[:2] == ["apt-cache", "depends"]:
            return subprocess.CompletedProcess(cmd, 0, "linux-doc\n  Depends: linux-doc-6.1\n", "")
        if cmd[:2] == ["apt-get", "download"]:
            (tmp_path / "debs" / f"{cmd[2]}_1.0_all.deb").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(recipes.subprocess, "run", fake_run)
    _docs_root(tmp_path)
    for path in (tmp_path / "usr/share/perl").iterdir():  # perl-doc is missing, the rest not.
        for f in path.glob("pod/*"):
            f.unlink()
        path.joinpath("pod").rmdir()
    debs = recipes.fetch_packages("tech", tmp_path)
    assert debs == [str(tmp_path / "debs" / "perl-doc_1.0_all.deb")]
    assert [c for c, _ in calls] == [
        ["apt-get", "download", "perl-doc"],
        ["dpkg", "-x", debs[0], str(tmp_path)],
    ]
    assert calls[0][1] == str(tmp_path / "debs")
    assert recipes.resolve_package(recipes.RECIPES["tech"][1]) == "linux-doc-6.1"

    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package perl-doc")

    monkeypatch.setattr(recipes.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match="Unable to locate package"):
        recipes.fetch_packages("tech", tmp_path)
