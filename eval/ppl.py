"""Perplexity over consecutive corpus windows, each from an empty memory (docs/spec.md §6.7).

python -m eval.ppl --checkpoint RUN_DIR --lengths 240,960 --windows 8 --out runs/ppl \
    [--config CFG] [--corpus DIR] [--batch 1] [--offload] [key=value ...]
(--random_init --config CFG instead of --checkpoint: random weights, for smoke tests.)
Prints ppl = exp(mean CE) per window length and the original's printed quantity (mean CE);
writes ppl.json (with the checkpoint step) after each length. A NaN or infinite result exits 2.
"""

import os
import sys

from eval import _common
from gca_jax import cli


def main(argv=None) -> int:
    """Parses arguments, runs the evaluation, writes the results; returns the exit status."""
    p = _common.parser("python -m eval.ppl", __doc__)
    p.add_argument("--lengths", default=None, help="window lengths (default data.seq_len)")
    p.add_argument("--windows", type=int, default=None, help="max windows per length")
    p.add_argument("--batch", type=int, default=1, help="windows per forward")
    p.add_argument("--corpus", default=None, help="prepared corpus (default: built-in text)")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args), debug=args.debug)


def _run(args) -> None:
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from tqdm import tqdm

    from gca_jax.data import make_eval_dataset
    from gca_jax.inference import evaluation as ev

    _common.output_dir(args.out)
    engine, cfg, origin = _common.setup(args)
    corpus, _ = _common.corpus_and_tokenizer(args.corpus, args.out, cfg)
    lengths = _common.lengths(args.lengths or str(cfg.data.seq_len))
    results = []
    for t in lengths:
        ds = make_eval_dataset(corpus, seq_len=t, batch_size=args.batch, max_windows=args.windows)
        if len(ds) == 0:
            raise ValueError(
                f"--corpus {corpus} is shorter than one window of --lengths {t}; pass a shorter "
                "length or a larger corpus"
            )
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
        # Rewritten after every length: a long run stopped midway keeps what it measured.
        ev.write_json(
            os.path.join(args.out, "ppl.json"),
            {
                "command": " ".join(sys.argv),
                **origin.to_dict(),
                "corpus": corpus,
                "results": results,
                "config": cfg.to_dict(),
            },
        )


if __name__ == "__main__":
    sys.exit(main())
