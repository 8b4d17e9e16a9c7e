"""Byte-by-byte writers of the files the Debian sources read: R serialization, bible.data (LZW).

A plain module (tests/data is on sys.path under pytest). Each writer follows the layout in the
docstring of the reader it feeds (`gca_jax.data.sources.rserial`, `gca_jax.data.sources.kjv`),
independently of that reader's code.
"""

import bz2
import gzip
import lzma
import struct
import zlib

# --- R serialization (XDR) ---------------------------------------------------------------------

CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP, LISTSXP, SYMSXP = 9, 10, 13, 14, 16, 19, 2, 1
HAS_ATTR, HAS_TAG, UTF8, LATIN1 = 1 << 9, 1 << 10, 1 << 3 << 12, 1 << 2 << 12


def i32(*values) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def header(version: int = 2) -> bytes:
    out = b"X\n" + i32(version, 0x040201, 0x020300)
    return out + (i32(5) + b"UTF-8" if version == 3 else b"")


def chars(text, flags: int = UTF8) -> bytes:
    if text is None:
        return i32(CHARSXP, -1)
    raw = text.encode("latin-1" if flags & LATIN1 else "utf-8")
    return i32(CHARSXP | flags, len(raw)) + raw


def strs(values, attrs: bytes = b"") -> bytes:
    flags = STRSXP | (HAS_ATTR if attrs else 0)
    return i32(flags, len(values)) + b"".join(chars(v) for v in values) + attrs


def ints(values, attrs: bytes = b"") -> bytes:
    return i32(INTSXP | (HAS_ATTR if attrs else 0), len(values), *values) + attrs


def sym(name: str) -> bytes:
    return i32(SYMSXP) + chars(name)


def ref(index: int) -> bytes:
    return i32(255 | (index << 8))


NIL = i32(254)


def pairlist(cells) -> bytes:
    """A tagged pairlist of (tag bytes, value bytes): each cell, then NULL."""
    return b"".join(i32(LISTSXP | HAS_TAG) + tag + value for tag, value in cells) + NIL


def named_list(items: dict, syms: dict) -> bytes:
    """A list with a names attribute; `syms` numbers the symbols already written (for refs)."""
    names = strs(list(items))
    return (
        i32(VECSXP | HAS_ATTR, len(items))
        + b"".join(items.values())
        + pairlist([(_sym(syms, "names"), names)])
    )


def _sym(syms: dict, name: str) -> bytes:
    """A symbol the first time, a reference to it afterwards (as R writes them)."""
    if name in syms:
        return ref(syms[name])
    syms[name] = len(syms) + 1
    return sym(name)


def rda(objects: dict, *, compress: str = "gzip") -> bytes:
    """A `save()` file of named objects (values are serialized item bytes)."""
    syms: dict = {}
    body = b"RDX2\n" + header() + pairlist([(_sym(syms, k), v) for k, v in objects.items()])
    return {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "none": bytes}[
        compress
    ](body)


def lazyload(directory, objects: dict, *, compressed: int = 1, method: bytes = b"Z") -> str:
    """`Rdata.rdb` + `Rdata.rdx` for named objects; returns the .rdb path."""
    blobs, keys, offset = [], {}, 0
    for name, item in objects.items():
        stream = header(3) + item
        if method == b"Z":
            packed = zlib.compress(stream)
        elif method == b"2":
            packed = bz2.compress(stream)
        elif method == b"X":
            filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
            packed = lzma.compress(stream, format=lzma.FORMAT_RAW, filters=filters)
        else:
            packed = stream
        blob = struct.pack(">I", len(stream)) + (method if compressed in (2, 3) else b"") + packed
        keys[name] = ints([offset, len(blob)])
        blobs.append(blob)
        offset += len(blob)
    syms: dict = {}
    index = named_list(
        {
            "variables": named_list(keys, syms),
            "references": named_list({}, syms),
            "compressed": i32(INTSXP, 1, compressed),
        },
        syms,
    )
    (directory / "Rdata.rdb").write_bytes(b"".join(blobs))
    (directory / "Rdata.rdx").write_bytes(gzip.compress(header() + index))
    return str(directory / "Rdata.rdb")


# --- bible.data: Unix compress LZW in windows ---------------------------------------------------


def lzw_compress(data: bytes, *, clear_after: int | None = None) -> bytes:
    """Headerless `compress` output (block mode, 9..16-bit codes, groups of n_bits bytes).

    Codes are packed LSB first into a group of n_bits bytes; when the code width grows, or after a
    clear code, the group is written out padded to n_bits bytes, so readers skip the rest of it.
    `clear_after=k` emits a clear code in place of the k-th new table entry.
    """
    out, group, offset = bytearray(), 0, 0
    n_bits, max_code, free_ent, table = 9, 511, 257, {}
    new_entries = 0

    def output(code, clear=False):
        nonlocal group, offset, n_bits, max_code
        group |= code << offset
        offset += n_bits
        if offset == 8 * n_bits:
            out.extend(group.to_bytes(n_bits, "little"))
            group, offset = 0, 0
        if clear or free_ent > max_code:
            if offset:
                out.extend(group.to_bytes(n_bits, "little"))
            group, offset = 0, 0
            if clear:
                n_bits, max_code = 9, 511
            else:
                n_bits += 1
                max_code = 1 << 16 if n_bits == 16 else (1 << n_bits) - 1

    ent = data[0]
    for c in data[1:]:
        if (ent, c) in table:
            ent = table[(ent, c)]
            continue
        output(ent)
        new_entries += 1
        if new_entries == clear_after:
            table, free_ent = {}, 257
            output(256, clear=True)
        elif free_ent < 1 << 16:
            table[(ent, c)] = free_ent
            free_ent += 1
        ent = c
    output(ent)
    if offset:
        out.extend(group.to_bytes((offset + 7) // 8, "little"))
    return bytes(out)


def bible_data(text: bytes, *, window: int = 4096) -> bytes:
    """A bible.data file: header, window table, then one LZW stream per window."""
    windows = [lzw_compress(text[i : i + window]) for i in range(0, len(text), window)]
    head = b"EC02" + b"Test Data File".ljust(80, b"\0") + struct.pack(">II", window, len(windows))
    offsets, pos = [], len(head) + 4 * (len(windows) + 1) + 3
    for w in windows:
        offsets.append(pos)
        pos += len(w)
    offsets.append(pos)
    table = struct.pack(f">{len(offsets)}I", *offsets)
    return head + table + b"\x1f\x9d\x90" + b"".join(windows)


def bible_text(num_books: int = 66, verses: int = 3) -> tuple[str, list[str]]:
    """Text in the bible.data layout and the abbreviations used: title line, then verse lines."""
    abbrevs = [f"{i % 3 or ''}B{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(num_books)]
    lines = ["Test Bible.  Textfile 000000."]
    for book, abbrev in enumerate(abbrevs):
        for v in range(1, verses + 1):
            lines.append(f"{abbrev}{1 + v // 3}:{v} Verse {v} of book {book}, and so on.")
    return "\n".join(lines) + "\n", abbrevs
