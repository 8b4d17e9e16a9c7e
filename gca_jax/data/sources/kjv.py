"""`kjv`: the King James Bible from Debian's `bible-kjv-text` package, one book per document.

Input: the package root (`dpkg -x bible-kjv-text_*.deb ROOT`, or `/` once installed), holding
`usr/lib/bible.data`, or that file itself. The file is the windowed compressed text of the
`bible` program (layout below); decoded it is 4.4 MB of ASCII, one verse per line
("Ge1:1 In the beginning God created the heaven and the earth."), 31,102 verses after one title
line. Each of the 66 books becomes one document: its name, a blank line, then its verses as
"chapter:verse text" lines. `--split` train/validation/test by book (`splits`).

File layout (all integers 4-byte big-endian):

```
0    "EC"  magic           2    "02"  file version        4    description, NUL-padded (80 bytes)
84   window size W (65536)                                 88   number of windows N (68)
92   N + 1 offsets: window i is bytes [offset[i], offset[i+1]) of the file
```

Window i decompresses to bytes [i*W, (i+1)*W) of the text (the last one is shorter). Each window
is a complete stream of Unix `compress` LZW without its 3-byte header (window 0's offset skips
it): codes start at 9 bits and grow to at most 16; code 256 clears the table; codes are packed
least significant bit first, and read in groups of n_bits bytes (8 codes), so a change of code
width, or a clear, discards the rest of the current group.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import struct
from collections.abc import Iterator

from gca_jax.data.sources import files, splits
from gca_jax.data.sources.base import PlanOptions, ShardTask, Source

logger = logging.getLogger(__name__)

DATA_PATH = os.path.join("usr", "lib", "bible.data")
_MAGIC = b"EC02"
_MAX_BITS, _CLEAR = 16, 256
_VERSE = re.compile(r"(\d?[A-Za-z]+)(\d+):(\d+) (.*)")
# The 66 books in the file's order (its abbreviations: Ge, Exo, ..., Rev).
BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah",
    "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians",
    "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James",
    "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
)  # fmt: skip


def lzw_decompress(data: bytes) -> bytes:
    """Decode one headerless `compress` stream (block mode, at most 16-bit codes)."""
    table = [bytes([i]) for i in range(256)] + [b""]  # Entry 256 is the clear code.
    n_bits, max_code, pos = 9, (1 << 9) - 1, 0
    group, bit, group_bits, clear = 0, 0, 0, False
    out, prev = [], None
    while True:
        if clear or bit >= group_bits or len(table) > max_code:
            if len(table) > max_code:
                n_bits += 1
                max_code = (1 << _MAX_BITS) if n_bits == _MAX_BITS else (1 << n_bits) - 1
            if clear:
                n_bits, max_code, clear = 9, (1 << 9) - 1, False
            size = min(n_bits, len(data) - pos)
            if size <= 0:
                break
            group = int.from_bytes(data[pos : pos + size], "little")
            pos, bit = pos + size, 0
            group_bits = size * 8 - (n_bits - 1)  # Whole codes only.
        code = (group >> bit) & ((1 << n_bits) - 1)
        bit += n_bits
        if code == _CLEAR and prev is not None:
            del table[257:]
            clear, prev = True, None
            continue
        if code < len(table) and (prev is not None or code < 256):
            entry = table[code]
        elif code == len(table) and prev is not None:
            entry = prev + prev[:1]  # The code being defined right now (the KwKwK case).
        else:
            raise ValueError(f"bad LZW code {code} (table has {len(table)} entries)")
        out.append(entry)
        if prev is not None and len(table) < (1 << _MAX_BITS):
            table.append(prev + entry[:1])
        prev = entry
    return b"".join(out)


def decode_file(path: str) -> str:
    """The text of a `bible.data` file.

    Raises:
        ValueError: not such a file (magic, window table or a window's codes are wrong).
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != _MAGIC or len(data) < 92:
        raise ValueError(f"{path} is not a bible.data file (magic {data[:4]!r} != {_MAGIC!r})")
    size, count = struct.unpack(">II", data[84:92])
    if not 0 < 92 + 4 * (count + 1) <= len(data):
        raise ValueError(f"{path}: window table of {count} windows does not fit the file")
    offsets = struct.unpack(f">{count + 1}I", data[92 : 92 + 4 * (count + 1)])
    parts = []
    for i, (start, stop) in enumerate(zip(offsets, offsets[1:])):
        window = lzw_decompress(data[start:stop])
        if len(window) != size and i != count - 1:
            raise ValueError(f"{path}: window {i} decodes to {len(window)} bytes, not {size}")
        parts.append(window)
    return b"".join(parts).decode("ascii")


def books(text: str, skipped: collections.Counter) -> list[tuple[str, str]]:
    """(name, document) of each book; lines that are not verses (after the title) are counted."""
    verses: dict[str, list[str]] = {}
    for line in text.splitlines()[1:]:
        m = _VERSE.fullmatch(line)
        if m is None:
            if line.strip():
                skipped["bad_record"] += 1
            continue
        verses.setdefault(m.group(1), []).append(f"{m.group(2)}:{m.group(3)} {m.group(4)}")
    if len(verses) != len(BOOKS):
        raise ValueError(f"the Bible text has {len(verses)} books, expected {len(BOOKS)}")
    return [
        (name, f"{name}\n\n" + "\n".join(lines) + "\n")
        for name, lines in zip(BOOKS, verses.values())
    ]


def _plan(inputs: list[str], options: PlanOptions) -> list[ShardTask]:
    """One task per Bible file; the split is applied when its books are known."""
    splits.check_split("kjv", options.split)

    def plan_path(path):
        found = os.path.join(path, DATA_PATH) if os.path.isdir(path) else path
        if not os.path.isfile(found):
            raise ValueError(f"{path=} holds no {DATA_PATH} (unpack bible-kjv-text there)")
        return [ShardTask("kjv", (found,), split=options.split)]

    return files.plan_each_path(inputs, "kjv", plan_path)


def _read(task: ShardTask, skipped: collections.Counter) -> Iterator[str]:
    """The books of the task's split."""
    named = books(decode_file(task.paths[0]), skipped)
    keep = splits.keep([name for name, _ in named], task.split)
    yield from (text for (_, text), k in zip(named, keep) if k)


SOURCE = Source(
    name="kjv",
    inputs="`bible-kjv-text` root or `bible.data`",
    notes="`usr/lib/bible.data`, one book each; `--split` train, validation or test (§3.4)",
    plan=_plan,
    read=_read,
)
