"""The R serialization reader on files written byte by byte (rfixtures.py)."""

import math

import pytest
import rfixtures as rf

from gca_jax.data.sources import rserial


def test_character_vector_with_na_and_encodings():
    item = rf.i32(rf.STRSXP, 4) + rf.chars("It is a truth") + rf.chars(None)
    item += rf.chars("café", rf.LATIN1) + rf.chars("東京")
    obj = rserial.loads(rf.header() + item)
    assert obj.type == "character" and obj.value == ["It is a truth", None, "café", "東京"]


def test_worked_example_bytes():
    # docs/data.md §3.4: c("Emma"), its string marked UTF-8, in a version-2 XDR stream.
    data = bytes.fromhex(
        "580a" "00000002" "00040201" "00020300"  # X\n, version 2, writer 4.2.1, reader 2.3.0
        "00000010" "00000001"  # STRSXP, length 1
        "00008009" "00000004" "456d6d61"  # CHARSXP (UTF-8 level), length 4, "Emma"
    )  # fmt: skip
    assert data == rf.header() + rf.strs(["Emma"])
    assert rserial.loads(data).value == ["Emma"]


def test_numbers_lists_attributes_and_references():
    syms: dict = {}
    doubles = rf.i32(rf.REALSXP, 2) + bytes.fromhex("3ff80000000000007ff00000000007a2")
    logicals = rf.i32(rf.LGLSXP, 3, 1, 0, -(2**31))
    item = rf.named_list(
        {"n": rf.ints([1, -(2**31), 3]), "x": doubles, "ok": logicals, "s": rf.strs(["a"])}, syms
    )
    obj = rserial.loads(rf.header(3) + item)
    assert obj.type == "list" and obj.names == ["n", "x", "ok", "s"]
    n, x, ok, s = obj.value
    assert n.value == [1, None, 3] and ok.value == [1, 0, None] and s.value == ["a"]
    assert x.value[0] == 1.5 and math.isnan(x.value[1])  # R's NA_real_ is a NaN.
    # A second named list refers back to the symbol `names` instead of repeating it.
    syms = {}
    nested = rf.named_list({"a": rf.named_list({"b": rf.strs(["z"])}, syms)}, syms)
    assert nested.count(b"names") == 1
    inner = rserial.loads(rf.header() + nested).value[0]
    assert inner.names == ["b"] and inner.value[0].value == ["z"]


def test_compact_intseq_altrep():
    info = rf.i32(rf.LISTSXP) + rf.sym("compact_intseq")
    info += rf.i32(rf.LISTSXP) + rf.sym("base") + rf.i32(rf.LISTSXP) + rf.ints([13]) + rf.NIL
    state = rf.i32(rf.REALSXP, 3) + bytes.fromhex("4014000000000000" + "3ff0000000000000" * 2)
    obj = rserial.loads(rf.header(3) + rf.i32(238) + info + state + rf.NIL)
    assert obj.type == "integer" and obj.value == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("compress", ["gzip", "bzip2", "xz", "none"])
def test_rda_files(tmp_path, compress):
    path = tmp_path / "novels.rda"
    path.write_bytes(rf.rda({"emma": rf.strs(["EMMA", "", "By Jane Austen"])}, compress=compress))
    objects = rserial.read_rda(path)
    assert list(objects) == ["emma"] and objects["emma"].value == ["EMMA", "", "By Jane Austen"]


def test_rds_file(tmp_path):
    (tmp_path / "x.rds").write_bytes(rf.rda({}, compress="none")[5:])  # A bare NULL pairlist.
    assert rserial.read_rds(tmp_path / "x.rds") is rserial.NULL


@pytest.mark.parametrize("compressed,method", [(1, b"Z"), (2, b"2"), (3, b"X"), (3, b"0")])
def test_lazyload_database(tmp_path, compressed, method):
    rdb = rf.lazyload(
        tmp_path,
        {"emma": rf.strs(["EMMA", "line"]), "persuasion": rf.strs(["Persuasion"])},
        compressed=compressed,
        method=method,
    )
    objects = rserial.read_lazyload(rdb)
    assert {k: v.value for k, v in objects.items()} == {
        "emma": ["EMMA", "line"],
        "persuasion": ["Persuasion"],
    }


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="only XDR"):
        rserial.loads(b"A\n2\n")
    with pytest.raises(ValueError, match="version 4 is not supported"):
        rserial.loads(b"X\n" + rf.i32(4, 0, 0))
    with pytest.raises(ValueError, match="ends early"):
        rserial.loads(rf.header() + rf.i32(rf.STRSXP, 2) + rf.chars("only one"))
    with pytest.raises(ValueError, match="does not support"):
        rserial.loads(rf.header() + rf.i32(21, 1))  # Byte code.
    with pytest.raises(ValueError, match="reference 3 to an unread value"):
        rserial.loads(rf.header() + rf.ref(3))
    (tmp_path / "bad.rda").write_bytes(b"RDA2\nxxx")
    with pytest.raises(ValueError, match="not an XDR .rda file"):
        rserial.read_rda(tmp_path / "bad.rda")
    (tmp_path / "lone.rdb").write_bytes(b"")
    with pytest.raises(ValueError, match="needs .*lone.rdx beside it"):
        rserial.read_lazyload(tmp_path / "lone.rdb")
