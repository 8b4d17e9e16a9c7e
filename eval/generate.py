"""Generate text from a prompt, streaming tokens to the terminal.

python -m eval.generate --config configs/tiny.yaml --prompt "Once upon a time" \
    --max_new_tokens 200 [--top_k 1 (greedy) | --top_k 40 --temperature 0.8] [--checkpoint DIR]
"""

import sys

from eval import _common


def main(argv=None) -> None:
    """Parses arguments, generates and streams the continuation."""
    p = _common.parser("python -m eval.generate", __doc__)
    p.add_argument("--prompt", required=True, help="prompt text (not empty)")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--top_k", type=int, default=1, help="1 = greedy; k > 1 = top-k sampling")
    p.add_argument("--temperature", type=float, default=1.0)
    args = p.parse_args(argv)
    import jax

    from gca_jax.data import load_tokenizer
    from gca_jax.inference import generate

    engine, cfg = _common.setup(args, needs="decode")
    tok = load_tokenizer(cfg.data.tokenizer)
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
    sys.exit(_common.run(main))
