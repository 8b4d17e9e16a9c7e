"""Perplexity over consecutive corpus windows, each from an empty memory (docs/spec.md §6.7).

python -m eval.ppl --config configs/tiny.yaml --lengths 240,960 --windows 8 --out runs/ppl \
    [--checkpoint DIR] [--corpus DIR] [--batch 1] [--offload] [key=value ...]
Prints ppl = exp(mean CE) per window length and the original's printed quantity (mean CE).
"""

import os
import sys

from eval import _common


def main(argv=None) -> None:
    """Parses arguments, runs the evaluation, writes the results."""
    p = _common.parser("python -m eval.ppl", __doc__)
    p.add_argument("--lengths", default=None, help="window lengths (default data.seq_len)")
    p.add_argument("--windows", type=int, default=None, help="max windows per length")
    p.add_argument("--batch", type=int, default=1, help="windows per forward")
    p.add_argument("--corpus", default=None, help="prepared corpus (default: built-in text)")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from tqdm import tqdm

    from gca_jax.data import make_eval_dataset
    from gca_jax.inference import evaluation as ev
    from gca_jax.inference.loading import check_corpus_tokenizer

    engine, cfg = _common.setup(args)
    os.makedirs(args.out, exist_ok=True)
    corpus = _common.corpus_or_builtin(args.corpus, args.out, cfg.data.tokenizer)
    check_corpus_tokenizer(cfg, corpus)
    lengths = [ev.parse_length(x) for x in (args.lengths or str(cfg.data.seq_len)).split(",")]
    results = []
    for t in lengths:
        ds = make_eval_dataset(corpus, seq_len=t, batch_size=args.batch, max_windows=args.windows)
        with tqdm(
            total=len(ds) * args.batch * t, unit="tok", unit_scale=True, desc=f"T={t}"
        ) as bar:
            res = ev.perplexity(
                engine, (ds[i]["tokens"] for i in range(len(ds))), progress=bar.update
            )
        results.append({"length": t, **res})
        print(
            f"T={t}: ppl {res['ppl']:.4f}  mean CE (original's 'perplexity') "
            f"{res['mean_ce']:.4f} nats  windows {res['windows']}"
        )
    ev.write_json(
        os.path.join(args.out, "ppl.json"),
        {
            "command": " ".join(sys.argv),
            "checkpoint": args.checkpoint,
            "corpus": corpus,
            "results": results,
            "config": cfg.to_dict(),
        },
    )


if __name__ == "__main__":
    sys.exit(_common.run(main))
