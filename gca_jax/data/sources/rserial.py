r"""R's serialization format, read in plain Python: `.rds`, `.rda`/`.RData` and lazy-load databases.

Only what data files hold is supported (vectors, lists, pairlists, attributes, symbols,
environments, references and the common ALTREP classes); closures' byte code and external
pointers raise `ValueError`. Layout (docs/data.md §3.4 has the worked byte example):

- **Containers.** A `.rds` file is one serialized object; a `.rda`/`.RData` file is the magic line
  `RDX2\n` or `RDX3\n` followed by one serialized pairlist of (name, object). Either may be
  compressed as a whole with gzip, bzip2 or xz (told apart by their magic bytes). An installed
  package's `LazyData` is a lazy-load database: `<name>.rdx` (a compressed `.rds`) is a list whose
  `variables` maps each object name to an integer pair (offset, length) into `<name>.rdb`, where
  the bytes at that offset are: a 4-byte big-endian uncompressed length, then zlib data; with
  `compressed` = 2 or 3 a type byte comes first: `Z` zlib, `2` bzip2, `X` raw LZMA2 (xz preset 9e),
  `0` stored.
- **Stream header.** `X\n` (XDR, big-endian; `A\n` ASCII and `B\n` native binary are refused),
  then int32 version (2 or 3), int32 writer R version, int32 minimal reader version; version 3 adds
  int32 n and n bytes naming the native encoding.
- **Items.** Each item starts with an int32 of flags: bits 0-7 the type, bit 8 "is object", bit 9
  "has attributes", bit 10 "has tag", bits 12-27 the "levels" (for strings: bit 2 latin-1, bit 3
  UTF-8, bit 6 ASCII). Then by type: character strings (9) an int32 length (-1 = NA) and the
  bytes; logical (10) and integer (13) vectors an int32 length and int32s (NA = -2^31); double
  (14) float64s; complex (15) pairs of float64s; character vectors (16), lists (19) and
  expression vectors (20) a length and that many items; raw (24) a length and bytes; pairlists (2)
  and calls (6) the attributes, the tag (if flagged), the head, then the rest of the list as
  another item; symbols (1) a string item. A vector's attributes (a tagged pairlist) follow it.
  A length of -1 announces a long vector: two int32s, upper and lower halves.
- **Shared values.** Symbols, environments and a few others are numbered as they are read; type
  255 refers back to one (its number in bits 8-31, or in the next int32 when those bits are 0).
  Types 241-254 stand for fixed values (NULL, the global environment, ...).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import math
import os
import struct
import zlib

_NILSXP, _SYMSXP, _LISTSXP, _CLOSXP, _ENVSXP, _PROMSXP, _LANGSXP = 0, 1, 2, 3, 4, 5, 6
_SPECIALSXP, _BUILTINSXP, _CHARSXP, _LGLSXP, _INTSXP, _REALSXP = 7, 8, 9, 10, 13, 14
_CPLXSXP, _STRSXP, _DOTSXP, _VECSXP, _EXPRSXP, _BCODESXP = 15, 16, 17, 19, 20, 21
_EXTPTRSXP, _WEAKREFSXP, _RAWSXP, _S4SXP = 22, 23, 24, 25
_ALTREP, _ATTRLISTSXP, _ATTRLANGSXP, _BASEENV, _EMPTYENV = 238, 239, 240, 241, 242
_PACKAGESXP, _PERSISTSXP, _NAMESPACESXP, _REFSXP = 248, 247, 249, 255
_FIXED = {
    254: "NULL",
    253: "globalenv",
    252: "unbound",
    251: "missing",
    250: "basenamespace",
    _EMPTYENV: "emptyenv",
    _BASEENV: "baseenv",
}
TYPE_NAMES = {
    _NILSXP: "NULL",
    _SYMSXP: "symbol",
    _LISTSXP: "pairlist",
    _CLOSXP: "closure",
    _PROMSXP: "promise",
    _LANGSXP: "language",
    _DOTSXP: "...",
    _LGLSXP: "logical",
    _INTSXP: "integer",
    _REALSXP: "double",
    _CPLXSXP: "complex",
    _STRSXP: "character",
    _VECSXP: "list",
    _EXPRSXP: "expression",
    _RAWSXP: "raw",
    _S4SXP: "S4",
    _ENVSXP: "environment",
    _EXTPTRSXP: "externalptr",
    _WEAKREFSXP: "weakref",
    _SPECIALSXP: "special",
    _BUILTINSXP: "builtin",
}
_PAIRLISTS = frozenset({_LISTSXP, _LANGSXP, _CLOSXP, _PROMSXP, _DOTSXP})
_NA_INT = -(2**31)
_LATIN1, _UTF8, _ASCII = 1 << 2, 1 << 3, 1 << 6
_MAX_DEPTH = 200  # Nesting R data does not reach; keeps a corrupt file from exhausting the stack.


@dataclasses.dataclass(frozen=True, eq=False)
class RObject:
    """One R value.

    Attributes:
        type: R's `typeof` name ("character", "integer", "list", "pairlist", "NULL", ...).
        value: vectors: a list (None for NA in character, integer and logical vectors; NaN for
            doubles); pairlists and calls: a list of (tag or None, RObject); symbols: their
            name; raw: bytes; environments: a dict of their bindings; others: None.
        attributes: attribute name -> RObject (names, class, dim, ...).
    """

    type: str
    value: object = None
    attributes: dict = dataclasses.field(default_factory=dict)

    def attr(self, name: str) -> RObject | None:
        """The attribute `name`, or None."""
        return self.attributes.get(name)

    @property
    def names(self) -> list | None:
        """The `names` attribute as a list of strings, or None."""
        names = self.attr("names")
        return None if names is None else names.value


NULL = RObject("NULL")


class _Reader:
    """Cursor over one XDR serialization stream."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = memoryview(data), 0, []
        self.encoding = "utf-8"

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"R data ends early: {n} bytes wanted at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:
            upper, lower = struct.unpack(">II", self.take(8))
            n = (upper << 32) + lower
        elif n < -1:
            raise ValueError(f"R data: negative length {n} at byte {self.pos - 4}")
        return n

    def header(self) -> None:
        fmt = bytes(self.take(2))
        if fmt != b"X\n":
            raise ValueError(f"R serialization format {fmt!r} is not supported; only XDR (b'X\\n')")
        version = self.int()
        self.take(8)  # Writer's R version, oldest R that can read it.
        if version == 3:
            self.encoding = _python_encoding(bytes(self.take(self.int())).decode("ascii"))
        elif version != 2:
            raise ValueError(f"R serialization version {version} is not supported (2 or 3)")

    def item(self, depth: int = 0) -> RObject:
        if depth > _MAX_DEPTH:
            raise ValueError(f"R data nests deeper than {_MAX_DEPTH} levels")
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in _FIXED:
            return NULL if kind == 254 else RObject(_FIXED[kind])
        if kind == _REFSXP:
            index = (flags >> 8) or self.int()
            if not 0 < index <= len(self.refs):
                raise ValueError(f"R data: reference {index} to an unread value")
            return self.refs[index - 1]
        if kind in (_ATTRLISTSXP, _ATTRLANGSXP):
            kind, has_attr = (_LISTSXP if kind == _ATTRLISTSXP else _LANGSXP), True
        if kind in _PAIRLISTS:
            return self._pairlist(kind, has_attr, has_tag, depth)
        if kind == _SYMSXP:
            sym = RObject("symbol", self.item(depth + 1).value)
            self.refs.append(sym)
            return sym
        if kind in (_PERSISTSXP, _PACKAGESXP, _NAMESPACESXP):
            if self.int() != 0:
                raise ValueError("R data: malformed persistent name")
            ref = RObject({_PERSISTSXP: "persistent"}.get(kind, "namespace"), self._strings(depth))
            self.refs.append(ref)
            return ref
        if kind == _ENVSXP:
            return self._environment(depth)
        if kind == _ALTREP:
            return self._altrep(depth)
        if kind == _CHARSXP:
            return RObject("string", self._chars(flags >> 12))
        value = self._vector(kind, depth)
        attributes = self._attributes(depth) if has_attr else {}
        return RObject(TYPE_NAMES[kind], value, attributes)

    def _chars(self, levels: int) -> str | None:
        n = self.int()
        if n == -1:
            return None
        raw = bytes(self.take(n))
        encoding = "latin-1" if levels & _LATIN1 else "utf-8" if levels & _UTF8 else self.encoding
        return raw.decode(encoding)

    def _strings(self, depth: int) -> list:
        return [self.item(depth + 1).value for _ in range(self.length())]

    def _vector(self, kind: int, depth: int):
        if kind in (_LGLSXP, _INTSXP):
            n = self.length()
            return [None if v == _NA_INT else v for v in struct.unpack(f">{n}i", self.take(4 * n))]
        if kind == _REALSXP:
            n = self.length()
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        if kind == _CPLXSXP:
            n = self.length()
            parts = struct.unpack(f">{2 * n}d", self.take(16 * n))
            return [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)]
        if kind in (_STRSXP, _VECSXP, _EXPRSXP):
            items = [self.item(depth + 1) for _ in range(self.length())]
            return [x.value for x in items] if kind == _STRSXP else items
        if kind == _RAWSXP:
            return bytes(self.take(self.length()))
        if kind == _S4SXP:
            return None
        if kind in (_SPECIALSXP, _BUILTINSXP):
            return bytes(self.take(self.int())).decode("ascii")
        name = TYPE_NAMES.get(kind, f"type {kind}")
        raise ValueError(f"R data holds a {name} value, which this reader does not support")

    def _attributes(self, depth: int) -> dict:
        attrs = self.item(depth + 1)
        if attrs.type != "pairlist":
            raise ValueError(f"R data: attributes must be a pairlist, got {attrs.type}")
        return {tag: value for tag, value in attrs.value}

    def _pairlist(self, kind: int, has_attr: bool, has_tag: bool, depth: int) -> RObject:
        # Walked as a loop over the tail: a long pairlist would otherwise recurse once per cell.
        cells, attributes = [], {}
        while True:
            if has_attr:
                cell_attributes = self._attributes(depth)
                attributes = cell_attributes if not cells else attributes
            tag = self.item(depth + 1).value if has_tag else None
            cells.append((tag, self.item(depth + 1)))
            flags = self.int()
            if flags & 0xFF not in _PAIRLISTS:
                self.pos -= 4
                tail = self.item(depth + 1)
                if tail.type != "NULL":
                    cells.append((None, tail))  # A dotted pair; R data never ends in one.
                break
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        return RObject(TYPE_NAMES[kind], cells, attributes)

    def _environment(self, depth: int) -> RObject:
        self.int()  # Locked or not.
        env = RObject("environment", {})
        self.refs.append(env)
        self.item(depth + 1)  # The enclosing environment.
        for part in (self.item(depth + 1), self.item(depth + 1)):  # Frame, then hash table.
            cells = part.value if part.type == "pairlist" else []
            if part.type == "list":  # A hashed frame: one pairlist (or NULL) per bucket.
                cells = [
                    cell
                    for bucket in part.value
                    if bucket.type == "pairlist"
                    for cell in bucket.value
                ]
            env.value.update({tag: value for tag, value in cells})
        attrs = self.item(depth + 1)
        if attrs.type == "pairlist":
            env.attributes.update({tag: value for tag, value in attrs.value})
        return env

    def _altrep(self, depth: int) -> RObject:
        info, state, attrs = (self.item(depth + 1) for _ in range(3))
        name = info.value[0][1].value if info.type == "pairlist" else None
        attributes = {t: v for t, v in attrs.value} if attrs.type == "pairlist" else {}
        if name in ("compact_intseq", "compact_realseq"):
            n, start, step = state.value
            values = [start + step * i for i in range(int(n))]
            kind = "integer" if name == "compact_intseq" else "double"
            return RObject(
                kind, [int(v) for v in values] if kind == "integer" else values, attributes
            )
        if name is not None and name.startswith("wrap_"):
            inner = state.value[0]
            return RObject(inner.type, inner.value, inner.attributes | attributes)
        if name == "deferred_string":
            source = state.value[0][1] if state.type == "pairlist" else state
            return RObject("character", [_deparse_number(v) for v in source.value], attributes)
        raise ValueError(f"R data holds an ALTREP object of class {name!r}, which is not supported")


def _python_encoding(r_name: str) -> str:
    """Python's codec for R's native-encoding name (e.g. "UTF-8", "latin1", "CP1252")."""
    lowered = r_name.lower()
    return "latin-1" if lowered in ("latin1", "iso-8859-1", "iso8859-1") else lowered or "utf-8"


def _deparse_number(v) -> str | None:
    """How R's `as.character` prints one number of a deferred string vector."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def loads(data: bytes) -> RObject:
    """Read one uncompressed serialization stream (what `serialize(x, NULL)` writes).

    Raises:
        ValueError: a non-XDR format, an unsupported version or value type, or truncated data.
    """
    reader = _Reader(data)
    reader.header()
    return reader.item()


def decompress(data: bytes) -> bytes:
    """Undo whole-file gzip, bzip2 or xz compression (told apart by magic); other bytes pass."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(path: str | os.PathLike) -> RObject:
    """The object of a `.rds` file (`saveRDS`), compressed or not."""
    with open(path, "rb") as f:
        return loads(decompress(f.read()))


def read_rda(path: str | os.PathLike) -> dict[str, RObject]:
    """The named objects of a `.rda`/`.RData` file (`save`), compressed or not.

    Raises:
        ValueError: the file does not start with `RDX2`/`RDX3` once decompressed.
    """
    with open(path, "rb") as f:
        data = decompress(f.read())
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise ValueError(f"{os.fspath(path)} is not an XDR .rda file (starts {data[:5]!r})")
    obj = loads(data[5:])
    if obj.type != "pairlist":
        raise ValueError(f"{os.fspath(path)}: a .rda file holds a pairlist, got {obj.type}")
    return {tag: value for tag, value in obj.value}


def read_lazyload(rdb_path: str | os.PathLike) -> dict[str, RObject]:
    """The named objects of a lazy-load database (`<name>.rdb` with `<name>.rdx` beside it).

    Raises:
        ValueError: the index is missing or malformed, or a blob does not decompress.
    """
    rdb_path = os.fspath(rdb_path)
    index_path = rdb_path[: -len(".rdb")] + ".rdx"
    if not (rdb_path.endswith(".rdb") and os.path.isfile(index_path)):
        raise ValueError(f"{rdb_path=} is not a lazy-load database (needs {index_path} beside it)")
    index = read_rds(index_path)
    parts = dict(zip(index.names or [], index.value))
    if "variables" not in parts:
        raise ValueError(f"{index_path}: no 'variables' entry in the lazy-load index")
    variables, compressed = parts["variables"], parts.get("compressed")
    kind = int(compressed.value[0]) if compressed is not None and compressed.value else 1
    out = {}
    with open(rdb_path, "rb") as f:
        for name, key in zip(variables.names or [], variables.value):
            offset, length = key.value
            f.seek(offset)
            out[name] = loads(_lazyload_blob(f.read(length), kind, f"{rdb_path}:{name}"))
    return out


def _lazyload_blob(blob: bytes, kind: int, where: str) -> bytes:
    """Undo the per-object compression of a lazy-load database."""
    if len(blob) < 5:
        raise ValueError(f"{where}: a lazy-load entry of {len(blob)} bytes is too short")
    size, body = struct.unpack(">I", blob[:4])[0], blob[4:]
    method = "Z" if kind not in (2, 3) else chr(body[0])
    body = body if kind not in (2, 3) else body[1:]
    try:
        if method == "Z":
            out = zlib.decompress(body)
        elif method == "2":
            out = bz2.decompress(body)
        elif method == "X":
            filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
            out = lzma.decompress(body, format=lzma.FORMAT_RAW, filters=filters)
        elif method == "0":
            out = body
        else:
            raise ValueError(f"unknown compression type {method!r}")
    except (zlib.error, OSError, lzma.LZMAError) as e:
        raise ValueError(f"{where}: lazy-load entry does not decompress: {e}") from e
    if len(out) != size:
        raise ValueError(f"{where}: decompressed to {len(out)} bytes, the header says {size}")
    return out
