"""Passkey results of several runs in one plot and one markdown table.

python -m eval.plot_passkey --run "DRT ret x1=out/niah_drt_x1_small" \
    --run "SWA=out/niah_swa_small" --title "single-needle passkey" --out passkey.png
Each --run is LABEL=DIR with DIR holding a passkey.json of eval.passkey. Prints the table
(accuracy in %, hits / samples) to stdout.
"""

import argparse
import json
import os
import sys

from gca_jax import cli
from gca_jax.inference.evaluation import plot_passkey_curves


def _label(length: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if length % size == 0:
            return f"{length // size}{unit}"
    return str(length)


def markdown_table(series: dict[str, list[dict]]) -> str:
    """Rows = runs, columns = every length any run reached; cells 'acc% (hits/samples)'."""
    lengths = sorted({s["length"] for rows in series.values() for s in rows})
    lines = [
        "| model | " + " | ".join(_label(n) for n in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for label, rows in series.items():
        by_len = {s["length"]: s for s in rows}
        cells = [
            f"{100 * by_len[n]['accuracy']:.0f} ({by_len[n]['hits']}/{by_len[n]['samples']})"
            if n in by_len
            else "-"
            for n in lengths
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_KEYS = ("length", "samples", "hits", "accuracy", "ci95")


def _summaries(item: str, path: str) -> list[dict]:
    """The ``summaries`` of one passkey.json; a damaged file is a ValueError naming --run."""
    problem = None
    try:
        with open(path) as f:
            rows = json.load(f)["summaries"]
        if not all(isinstance(s, dict) and set(_KEYS) <= s.keys() for s in rows):
            problem = f"a summary lacks one of {_KEYS}"
    except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: not JSON
        problem = f"no key {e}" if isinstance(e, KeyError) else str(e)
    if problem is not None:
        raise ValueError(
            f"--run {item!r}: {path} is not a passkey.json of eval.passkey ({problem}); re-run "
            "eval.passkey for it"
        )
    return rows


def main(argv=None) -> int:
    """Parses arguments, reads the runs, writes the plot, prints the table; returns status."""
    p = argparse.ArgumentParser(prog="python -m eval.plot_passkey", description=__doc__)
    p.add_argument("--run", action="append", required=True, help="LABEL=DIR (repeatable)")
    p.add_argument("--title", default="passkey accuracy")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors too")
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args), debug=args.debug)


def _run(args) -> None:
    series = {}
    for item in args.run:
        label, sep, run_dir = item.partition("=")
        if not sep or not label or not run_dir:
            raise ValueError(f"--run {item!r} must be LABEL=DIR")
        path = os.path.join(run_dir, "passkey.json")
        if not os.path.isfile(path):
            raise ValueError(f"--run {item!r}: no passkey.json in {run_dir}; run eval.passkey")
        series[label] = _summaries(item, path)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise ValueError(
            f"--out {args.out}: its directory {out_dir} does not exist or is not writable"
        )
    plot_passkey_curves(series, args.out, title=args.title)
    print(markdown_table(series))


if __name__ == "__main__":
    sys.exit(main())
