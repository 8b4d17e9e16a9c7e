"""Prepare a corpus: `python -m train.prepare --format pg19 --split train INPUT... --out DIR`.

Also: `--fetch-tokenizer gpt2` caches the GPT-2 tokenizer in data/gpt2; `--fetch-packages RECIPE`
downloads and unpacks a recipe's Debian packages (into `--out`, default data/debian); `--recipe
RECIPE [ROOT] --out DIR` prepares DIR/{train,validation,test} from them (GPT-2 tokens by default;
`--recipe synopsis` writes DIR/{train,validation,test}.jsonl summarization pairs instead).
A thin CLI over `gca_jax.data` (deterministic, so it takes no --seed); see docs/data.md for every
source and recipe. The summary ends with the config lines a model trained on the corpus needs.
Exit status 2 means an expected error (bad inputs, reported before any work; inputs with no
usable document; an unwritable --out; a full disk): one `error:` line, its traceback only with
--debug. Status 1 is a failed download, or a bug (with its traceback).
"""

import argparse
import logging
import os
import sys

from gca_jax import cli
from gca_jax.data import gpt2, prepare, recipes, sources

# (flag, prepare_corpus keyword, argparse options); the first two also apply to --recipe.
_OPTIONS = (
    ("--tokenizer", "tokenizer", dict(help="'bytes' (--format's default), 'gpt2' or a path")),
    ("--workers", "num_workers", dict(type=int, default=2, help="tokenizer processes")),
    ("--train-tokenizer", "train_tokenizer_vocab", dict(type=int, metavar="VOCAB")),
    ("--split", "split", dict(default="train")),
    ("--text-field", "text_field", dict(help="jsonl/parquet/tfds text field")),
    ("--data-dir", "data_dir", dict(help="tfds data_dir")),
    ("--manual-dir", "manual_dir", dict(help="tfds: build local_pg19/local_proofpile from here")),
    ("--files-per-shard", "files_per_shard", dict(type=int, default=64)),
    ("--holdout-every", "holdout_every", dict(type=int, default=0, metavar="K")),
)


def _parser() -> argparse.ArgumentParser:
    formats = "".join(f"\n  {s.name:10} {s.inputs}: {s.notes}" for s in sources.SOURCES.values())
    p = argparse.ArgumentParser(
        prog="python -m train.prepare",
        description=__doc__,
        epilog="formats:" + formats + "\nrecipes: " + ", ".join(recipes.RECIPES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", help="input files/directories (--recipe: the root)")
    p.add_argument("--out", help="corpus directory to create or resume")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--format", choices=sources.FORMATS, help="see formats below")
    what.add_argument("--recipe", choices=tuple(recipes.RECIPES), help="docs/data.md §3.4")
    what.add_argument("--fetch-packages", choices=tuple(recipes.RECIPES), metavar="RECIPE")
    what.add_argument("--fetch-tokenizer", choices=(gpt2.NAME,), help=f"cache in {gpt2.GPT2_DIR}")
    what.add_argument(
        "--bm25-idf",
        metavar="CORPUS_DIR",
        help="write CORPUS_DIR/bm25_idf.npy, its BM25 idf (model_type rpt; docs/data.md)",
    )
    p.add_argument("--chunk_len", "--chunk-len", type=int, help="--bm25-idf: the model's S")
    p.add_argument("--buckets", type=int, help="--bm25-idf: term buckets (default: vocabulary)")
    for flag, dest, kw in _OPTIONS:
        p.add_argument(flag, dest=dest, **kw)
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors too")
    return p


def _summary(out: str, m: dict) -> str:
    mb, secs, cpu = m["text_bytes"] / 1e6, max(m["seconds"], 1e-9), max(m["cpu_seconds"], 1e-9)
    t = m["tokenizer"]
    return (
        f"{out}: {m['num_documents']} documents, {m['num_tokens']} tokens, "
        f"{len(m['shards'])} shards ({m['shards_reused']} reused from an earlier run); "
        f"skipped: {m['skipped'] or 'none'}; tokenized {mb:.2f} MB in {secs:.1f} s "
        f"({mb / secs:.2f} MB/s; {mb / cpu:.2f} MB per CPU-second per process); "
        f"vocabulary {t['vocab_size']} ids (eot {t['eot_id']}, pad {t['pad_id']}, "
        f"landmark {t['landmark_id']})"
    )


def _report(args, made: dict) -> None:
    """Prints the summaries, a smaller trained vocabulary than asked, and the config lines."""
    for out, m in made.items():
        print(_summary(out, m))
    if not made:
        return
    vocab = next(iter(made.values()))["tokenizer"]["vocab_size"]
    asked = args.train_tokenizer_vocab
    if asked and vocab < asked:
        print(
            f"WARNING: --train-tokenizer {asked} gave only {vocab} ids (the inputs hold too few "
            f"distinct merges); the config lines below use {vocab}"
        )
    print("config lines for a model trained on it (YAML keys, or key=value overrides):")
    tokenizer = args.tokenizer or (recipes.DEFAULT_TOKENIZER if args.recipe else None)
    for line in prepare.config_lines(made, tokenizer):
        print(f"  {line}")


def _bm25_idf(args, p) -> dict:
    """--bm25-idf: writes the corpus' BM25 idf and prints the config line that reads it."""
    if args.chunk_len is None:
        p.error("--bm25-idf needs --chunk_len S (the model's model.retrieval.chunk_len)")
    from gca_jax.data import bm25_idf

    m = bm25_idf.compute_idf(args.bm25_idf, chunk_len=args.chunk_len, buckets=args.buckets)
    path = os.path.join(args.bm25_idf, "bm25_idf.npy")
    print(
        f"{path}: idf of {m['num_chunks']} chunks of {m['chunk_len']} tokens over "
        f"{m['buckets']} buckets ({m['hash']} hash), mean chunk length {m['avg_len']:.2f}"
    )
    print(f"config line: model.rpt.idf_path={path}")
    return {}


def _run(args, p, progress) -> dict:
    """Do what the arguments ask; returns {output directory: manifest}."""
    if args.fetch_tokenizer:
        print(gpt2.fetch(args.out or gpt2.GPT2_DIR))
        return {}
    if args.bm25_idf:
        return _bm25_idf(args, p)
    if args.fetch_packages:
        root = args.out or recipes.DEBIAN_ROOT
        done = recipes.fetch_packages(args.fetch_packages, root)
        print(f"{root}: unpacked {len(done)} package(s) {done}")
        return {}
    if not args.out:
        p.error("--out is required with --format and --recipe")
    if args.format:
        kwargs = {dest: getattr(args, dest) for _, dest, _ in _OPTIONS}
        kwargs["tokenizer"] = args.tokenizer or "bytes"
        m = prepare.prepare_corpus(
            args.inputs, args.out, format=args.format, progress=progress, **kwargs
        )
        return {args.out: m}
    extra = [f for f, d, kw in _OPTIONS[2:] if getattr(args, d) != kw.get("default")]
    if extra or len(args.inputs) > 1:
        p.error(f"--recipe takes at most one ROOT and no {extra or 'more inputs'}")
    root = args.inputs[0] if args.inputs else recipes.DEBIAN_ROOT
    if args.recipe in recipes.PAIR_RECIPES:
        if args.tokenizer:
            p.error(f"--recipe {args.recipe} writes text pairs and takes no --tokenizer")
        from gca_jax.data import synopsis

        print(synopsis.summary_line(args.out, synopsis.prepare_pairs(root, args.out)))
        return {}
    tok = args.tokenizer or recipes.DEFAULT_TOKENIZER
    made = recipes.prepare_recipe(
        args.recipe, root, args.out, tokenizer=tok, num_workers=args.num_workers, progress=progress
    )
    return {f"{args.out}/{split}": m for split, m in made.items()}


def main(argv=None) -> int:
    """Run the CLI; returns the exit status."""
    p = _parser()
    args = p.parse_args(argv)
    # force: importing grain (through absl) has already put a WARNING-level handler on root.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    return cli.run(lambda: _main(args, p), debug=args.debug)


def _main(args, p) -> int:
    from tqdm import tqdm

    bars = []

    def progress(result, total):
        if not bars or bars[-1].n >= bars[-1].total:
            bars.append(tqdm(total=total, unit="shard", desc="prepare"))
        bars[-1].update(1)

    try:
        made = _run(args, p, progress)
    except RuntimeError as e:
        if isinstance(e, cli.UserError) or args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)  # a failed download or unpack
        return 1
    finally:
        for bar in bars:
            bar.close()
    _report(args, made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
