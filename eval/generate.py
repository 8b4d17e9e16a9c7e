"""Generate text from a prompt, streaming tokens to the terminal.

python -m eval.generate --checkpoint RUN_DIR --prompt "Once upon a time" \
    --max_new_tokens 200 [--top_k 1 (greedy) | --top_k 40 --temperature 0.8] [--config CFG]
(--random_init --config CFG instead of --checkpoint: random weights, for smoke tests.)
The line naming the checkpoint step goes to stderr, the text to stdout.
"""

import sys

from eval import _common
from gca_jax import cli


def main(argv=None) -> int:
    """Parses arguments, generates and streams the continuation; returns the exit status."""
    p = _common.parser("python -m eval.generate", __doc__)
    p.add_argument("--prompt", required=True, help="prompt text (not empty)")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--top_k", type=int, default=1, help="1 = greedy; k > 1 = top-k sampling")
    p.add_argument("--temperature", type=float, default=1.0)
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args), debug=args.debug)


def _run(args) -> None:
    import jax

    from gca_jax.inference import generate
    from gca_jax.inference.loading import load_tokenizer_for

    engine, cfg, _ = _common.setup(args, needs="decode", announce=sys.stderr)
    tok = load_tokenizer_for(cfg)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt is empty after tokenization; give some text")
    new_ids, shown = [], ""

    def stream(ids_B):
        nonlocal shown
        new_ids.append(int(ids_B[0]))
        text = tok.decode(new_ids)
        # Hold back a trailing partial UTF-8 character (decoded as U+FFFD) until it completes.
        stable = text.rstrip("\ufffd")
        print(stable[len(shown) :], end="", flush=True)
        shown = stable

    print(args.prompt, end="", flush=True)
    generate(
        engine,
        [ids],
        max_new_tokens=args.max_new_tokens,
        top_k=args.top_k,
        temperature=args.temperature,
        key=jax.random.key(args.seed),
        on_tokens=stream,
    )
    print()


if __name__ == "__main__":
    sys.exit(main())
