"""Train/validation/test by document name, for sources that ship no splits of their own.

Within one input (a package, a directory, one R or Bible file), the documents are ranked by the
sha256 of their name; the first k form "validation", the next k "test" and the rest "train", with
k = max(1, round(5% of the documents)) (none held out below 3 documents). So every split of every
source is non-empty, a document's split does not depend on the order files are listed in, and a
document that a new package version adds or removes moves at most two others between splits
(while k stays the same). Worked example: the six Austen
novels give k = 1 (4 train, 1 validation, 1 test); the 66 books of the Bible k = 3; 206 Perl
manuals k = 10.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLITS = ("train", "validation", "test")
HELD_OUT_FRACTION = 0.05


def check_split(format_: str, split: str) -> None:
    """Raise for a split name these sources do not have."""
    if split not in SPLITS:
        raise ValueError(f"format {format_!r}: {split=} must be one of {SPLITS}")


def held_out(n: int) -> int:
    """Documents in each of validation and test, out of `n`."""
    return 0 if n < 3 else max(1, round(HELD_OUT_FRACTION * n))


def assign(names: Sequence[str]) -> dict[str, str]:
    """Split of each name (names must be distinct)."""
    if len(set(names)) != len(names):
        raise ValueError(f"document names must be distinct to split them, got {len(names)} names")
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode("utf-8")).hexdigest())
    k = held_out(len(ranked))
    return {
        name: SPLITS[1] if i < k else SPLITS[2] if i < 2 * k else SPLITS[0]
        for i, name in enumerate(ranked)
    }


def keep(names: Sequence[str], split: str) -> list[bool]:
    """Whether each name (in the given order) belongs to `split`."""
    of = assign(names)
    return [of[name] == split for name in names]
