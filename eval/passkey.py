"""Passkey retrieval accuracy vs context length (docs/spec.md §6.5), with segmented prefill.

python -m eval.passkey --checkpoint RUN_DIR --task single --lengths 1k,4k --samples 8 \
    --out runs/passkey [--config CFG] [--corpus DIR] [--offload] [key=value ...]
(--random_init --config CFG instead of --checkpoint: random weights, for smoke tests.)
Lengths are rounded down to a multiple of the NIAH chunk length (the model's S, or
data.niah_chunk_len). Writes passkey.json (with the checkpoint step) and passkey.png to --out,
updated after each length. Non-finite logits exit 2.
"""

import math
import os
import sys
import typing

from eval import _common
from gca_jax import cli
from gca_jax.config import NiahTask


def main(argv=None) -> int:
    """Parses arguments, runs the evaluation, writes the results; returns the exit status."""
    p = _common.parser("python -m eval.passkey", __doc__)
    p.add_argument("--task", choices=typing.get_args(NiahTask), default="single")
    p.add_argument("--lengths", default="4k,16k", help="comma list: 4k,16k,...,16M")
    p.add_argument(
        "--samples", default="10", help="samples per length: one number, or one per length"
    )
    p.add_argument("--passkey_len", type=int, default=None, help="tokens per passkey")
    p.add_argument("--corpus", default=None, help="prepared corpus (default: built-in text)")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args, p), debug=args.debug)


def _run(args, p) -> None:
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from tqdm import tqdm

    from gca_jax.data.niah import NiahSource
    from gca_jax.inference import evaluation as ev

    lengths = _common.lengths(args.lengths)
    samples = [int(x) if x.strip().isdigit() else 0 for x in args.samples.split(",")]
    if len(samples) == 1:
        samples *= len(lengths)
    if len(samples) != len(lengths) or min(samples) < 1:
        p.error(f"--samples {args.samples}: give one count >= 1, or one per length")
    _common.output_dir(args.out)
    engine, cfg, origin = _common.setup(args)
    corpus, tok = _common.corpus_and_tokenizer(args.corpus, args.out, cfg)
    chunk = cfg.niah_chunk_len
    if chunk is None:
        raise ValueError(
            f"model_type={cfg.model.model_type!r} has no chunk length to align NIAH tasks to: "
            "set data.niah_chunk_len (e.g. data.niah_chunk_len=64, as the DRT configs)"
        )
    unit = math.lcm(chunk, cfg.model.token_multiple)
    summaries, records = [], {}
    for length, num in zip(lengths, samples, strict=True):
        t = length // unit * unit
        if t == 0:
            raise ValueError(
                f"--lengths {args.lengths}: {length} is shorter than one NIAH unit of {unit} "
                "tokens (the chunk length); pass longer lengths"
            )
        source = NiahSource(
            corpus,
            tok,
            task=args.task,
            seq_len=t,
            chunk_size=chunk,
            seed=args.seed,
            num_samples=num,
            passkey_len=args.passkey_len,
        )
        with tqdm(total=t * num, unit="tok", unit_scale=True, desc=f"T={t}") as bar:
            recs = ev.score_passkey_samples(
                engine, source, num, neutral_id=tok.pad_id, progress=bar.update
            )
        summaries.append(ev.passkey_summary(recs, t))
        records[t] = recs
        print(f"T={t}: accuracy {summaries[-1]['accuracy']:.3f} ci95 {summaries[-1]['ci95']}")
        # Rewritten after every length: a long run stopped midway keeps what it measured.
        ev.write_json(
            os.path.join(args.out, "passkey.json"),
            {
                "command": " ".join(sys.argv),
                "task": args.task,
                **origin.to_dict(),
                "corpus": corpus,
                "summaries": summaries,
                "records": records,
                "config": cfg.to_dict(),
            },
        )
        ev.plot_passkey(
            summaries, os.path.join(args.out, "passkey.png"), title=f"passkey ({args.task})"
        )


if __name__ == "__main__":
    sys.exit(main())
