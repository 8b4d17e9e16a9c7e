"""Prepare a corpus: `python -m train.prepare --format pg19 --split train INPUT... --out DIR`.

A thin CLI over `gca_jax.data.prepare.prepare_corpus`; see docs/data.md for every source.
"""

import argparse
import logging
import sys

from gca_jax.data import prepare, sources


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m train.prepare", description=__doc__)
    p.add_argument("inputs", nargs="*", help="input files/directories (tfds: the dataset name)")
    p.add_argument("--out", required=True, help="corpus directory to create or resume")
    p.add_argument("--format", required=True, choices=sources.FORMATS)
    p.add_argument("--tokenizer", default="bytes", help="'bytes' or a tokenizer.json path")
    p.add_argument(
        "--train-tokenizer",
        type=int,
        metavar="VOCAB",
        default=None,
        help="train a byte-level BPE of VOCAB ids on the inputs and use it",
    )
    p.add_argument("--split", default="train")
    p.add_argument("--text-field", default=None, help="jsonl/parquet/tfds text field")
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument("--workers", type=int, default=2, help="tokenizer processes")
    p.add_argument("--files-per-shard", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="unused: preparation is deterministic")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (2 for bad inputs)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    bar = None

    def progress(result, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="shard", desc="prepare")
        bar.update(1)
        bar.set_postfix(docs=result.num_documents, reused=result.reused)

    try:
        m = prepare.prepare_corpus(
            args.inputs,
            args.out,
            format=args.format,
            tokenizer=args.tokenizer,
            split=args.split,
            text_field=args.text_field,
            num_workers=args.workers,
            files_per_shard=args.files_per_shard,
            data_dir=args.data_dir,
            train_tokenizer_vocab=args.train_tokenizer,
            progress=progress,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    mb = m["text_bytes"] / 1e6
    print(
        f"{args.out}: {m['num_documents']} documents, {m['num_tokens']} tokens, "
        f"{len(m['shards'])} shards ({m['shards_reused']} reused); "
        f"skipped {m['skipped'] or 'none'}; "
        f"tokenized {mb:.2f} MB in {m['seconds']:.1f} s ({mb / max(m['seconds'], 1e-9):.2f} MB/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
