"""Summaries of a test split and their ROUGE (docs/spec.md §8, docs/inference.md "Summarization").

python -m eval.summarize --checkpoint RUN_DIR --split test --out DIR [--pairs DIR]
    [--max_new_tokens 128] [--top_k 2 | --greedy | --top_p P] [--temperature 1]
    [--samples N] [--batch_size B] [--max_prompt_len N] [--seed 1] [key=value ...]
(--random_init --config CFG instead of --checkpoint: random weights, for smoke tests.)
Pairs default to the run's data.summary_dir. Writes DIR/scores.json (ROUGE-1/2/L/Lsum on text
and the original's token-string variant, each with a bootstrap 95% interval) and DIR/examples.md.
"""

import sys
import time

from eval import _common
from gca_jax import cli


def main(argv=None) -> int:
    """Parses arguments, generates, scores and writes the results; returns the exit status."""
    p = _common.parser("python -m eval.summarize", __doc__)
    p.set_defaults(seed=1)  # the original samples with seed 1
    p.add_argument("--split", default="test", help="pairs split: train, validation or test")
    p.add_argument("--pairs", default=None, help="pairs directory (default data.summary_dir)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--max_new_tokens", type=int, default=128, help="the forced ':' included")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--top_k", type=int, default=2, help="top-k sampling (the original's 2)")
    how.add_argument("--greedy", action="store_true", help="argmax decoding")
    how.add_argument("--top_p", type=float, default=None, help="nucleus sampling over all V")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--samples", type=int, default=None, help="the first N pairs (default all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument(
        "--max_prompt_len",
        type=int,
        default=None,
        help="cut documents to this prompt length (default data.seq_len - data.max_summary_len "
        "- 1, the training budget; 0 = no cut, as the original)",
    )
    p.add_argument("--examples", type=int, default=5, help="examples shown in examples.md")
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args), debug=args.debug)


def _decoding(args) -> dict:
    if args.greedy:
        return {"top_k": 1, "top_p": 1.0}
    if args.top_p is not None:
        if not 0 < args.top_p < 1:
            raise ValueError(f"--top_p {args.top_p} must be in (0, 1)")
        return {"top_k": 1, "top_p": args.top_p}
    if args.top_k < 2:
        raise ValueError(f"--top_k {args.top_k} must be >= 2 (use --greedy for argmax)")
    return {"top_k": args.top_k, "top_p": 1.0}


def _run(args) -> None:
    from tqdm import tqdm

    from gca_jax.data import summarization
    from gca_jax.inference import summarize as summ
    from gca_jax.inference.loading import load_tokenizer_for
    from gca_jax.training.inputs import summarization_format

    decoding = _decoding(args)
    for flag in ("max_new_tokens", "batch_size", "samples"):
        if getattr(args, flag) is not None and getattr(args, flag) < (2 if flag[0] == "m" else 1):
            raise ValueError(f"--{flag} {getattr(args, flag)} is too small")
    _common.output_dir(args.out)
    engine, cfg, origin = _common.setup(args, needs="decode")
    pairs_dir = args.pairs or cfg.data.summary_dir
    if pairs_dir is None:
        raise ValueError("no pairs: pass --pairs DIR (the run has no data.summary_dir)")
    try:
        pairs = summarization.read_split(pairs_dir, args.split)[: args.samples]
    except ValueError as e:
        raise ValueError(f"--pairs {pairs_dir} --split {args.split}: {e}") from e
    tok = load_tokenizer_for(cfg)
    fmt = summarization_format(cfg, tok)
    limit = args.max_prompt_len
    if limit is None:
        limit = cfg.data.seq_len - cfg.data.max_summary_len - 1
    documents = [tok.encode_array(d) for d, _ in pairs]
    start = time.perf_counter()
    with tqdm(total=len(pairs), unit="example", desc=f"summarize {args.split}") as bar:

        def progress(done, new_tokens):
            bar.n = done
            bar.set_postfix(
                tokens_per_s=f"{new_tokens / (time.perf_counter() - start):.1f}", refresh=False
            )
            bar.refresh()

        preds, stats = summ.generate_summaries(
            engine,
            documents,
            fmt,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            max_prompt_len=limit or None,
            temperature=args.temperature,
            seed=args.seed,
            progress=progress,
            **decoding,
        )
    seconds = time.perf_counter() - start
    result = summ.score_summaries(tok, pairs, preds)
    meta = {
        "command": " ".join(sys.argv),
        **origin.to_dict(),
        "pairs": pairs_dir,
        "split": args.split,
        "examples": len(pairs),
        "decoding": {**decoding, "temperature": args.temperature, "seed": args.seed},
        "max_new_tokens": args.max_new_tokens,
        "max_prompt_len": limit or None,
        "chunk_len": fmt.chunk_size,
        "generation": {**stats, "seconds": seconds, "tokens_per_s": stats["new_tokens"] / seconds},
        "config": cfg.to_dict(),
    }
    summ.write_summary_outputs(args.out, meta, result, tok, pairs, preds, shown=args.examples)
    print(summ.summary_table(result, title=f"{origin.describe()}, {len(pairs)} {args.split} pairs"))


if __name__ == "__main__":
    sys.exit(main())
