"""Prepare a corpus: `python -m train.prepare --format pg19 --split train INPUT... --out DIR`.

`python -m train.prepare --fetch-tokenizer gpt2` downloads and caches the GPT-2 tokenizer.

A thin CLI over `gca_jax.data.prepare.prepare_corpus` (deterministic, so it takes no --seed); see
docs/data.md for every source. Exit status 2 means bad inputs, reported before any work.
"""

import argparse
import logging
import sys

from gca_jax.data import gpt2, prepare, sources

# (flag, prepare_corpus keyword, argparse options)
_OPTIONS = (
    ("--tokenizer", "tokenizer", dict(default="bytes", help="'bytes' or a tokenizer.json path")),
    (
        "--train-tokenizer",
        "train_tokenizer_vocab",
        dict(type=int, metavar="VOCAB", help="train a byte-level BPE first"),
    ),
    ("--split", "split", dict(default="train")),
    ("--text-field", "text_field", dict(help="jsonl/parquet/tfds text field")),
    ("--data-dir", "data_dir", dict(help="tfds data_dir")),
    ("--manual-dir", "manual_dir", dict(help="tfds: build local_pg19/local_proofpile from here")),
    ("--workers", "num_workers", dict(type=int, default=2, help="tokenizer processes")),
    ("--files-per-shard", "files_per_shard", dict(type=int, default=64)),
    (
        "--holdout-every",
        "holdout_every",
        dict(type=int, default=0, metavar="K", help="text: every K-th file is 'validation'"),
    ),
)


def main(argv=None) -> int:
    """Run the CLI; returns the exit status."""
    formats = "".join(f"\n  {s.name:10} {s.inputs}: {s.notes}" for s in sources.SOURCES.values())
    p = argparse.ArgumentParser(
        prog="python -m train.prepare",
        description=__doc__,
        epilog="formats:" + formats,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", help="input files/directories (tfds: the dataset name)")
    p.add_argument("--out", help="corpus directory to create or resume")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--format", choices=sources.FORMATS, help="see formats below")
    what.add_argument(
        "--fetch-tokenizer", choices=(gpt2.NAME,), help=f"download and cache it in {gpt2.GPT2_DIR}"
    )
    for flag, dest, kw in _OPTIONS:
        p.add_argument(flag, dest=dest, **kw)
    args = p.parse_args(argv)
    # force: importing grain (through absl) has already put a WARNING-level handler on root.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    if args.fetch_tokenizer:
        try:
            print(gpt2.fetch(args.out or gpt2.GPT2_DIR))
        except (RuntimeError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.out:
        p.error("--out is required with --format")
    from tqdm import tqdm

    bars = []

    def progress(result, total):
        if not bars:
            bars.append(tqdm(total=total, unit="shard", desc="prepare"))
        bars[0].update(1)

    try:
        kwargs = {dest: getattr(args, dest) for _, dest, _ in _OPTIONS}
        m = prepare.prepare_corpus(
            args.inputs, args.out, format=args.format, progress=progress, **kwargs
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for bar in bars:
            bar.close()
    mb, secs, cpu = m["text_bytes"] / 1e6, max(m["seconds"], 1e-9), max(m["cpu_seconds"], 1e-9)
    print(
        f"{args.out}: {m['num_documents']} documents, {m['num_tokens']} tokens, "
        f"{len(m['shards'])} shards ({m['shards_reused']} reused from an earlier run); "
        f"skipped: {m['skipped'] or 'none'}; tokenized {mb:.2f} MB in {secs:.1f} s "
        f"({mb / secs:.2f} MB/s; {mb / cpu:.2f} MB per CPU-second per process)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
