"""Which past chunks each chunk retrieved, with what weight, per group: JSON and heat maps.

python -m eval.inspect_retrieval --config configs/tiny.yaml --text_file notes.txt \
    --out runs/inspect [--checkpoint DIR] [--text "..."] [key=value ...]
Writes retrieval.json and retrieval.png (query chunk vs retrieved chunk, one panel per group).
"""

import os
import sys

from eval import _common


def main(argv=None) -> None:
    """Parses arguments, runs the text through the model, writes JSON and PNG."""
    p = _common.parser("python -m eval.inspect_retrieval", __doc__)
    p.add_argument("--text", default=None, help="the text to inspect")
    p.add_argument("--text_file", default=None, help="or a file holding it")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    if (args.text is None) == (args.text_file is None):
        raise ValueError("give exactly one of --text and --text_file")
    text = args.text if args.text is not None else open(args.text_file).read()
    from gca_jax.data import load_tokenizer
    from gca_jax.inference import evaluation as ev
    from gca_jax.inference import retrieval_view

    engine, cfg = _common.setup(args, needs="retrieval")
    tok = load_tokenizer(cfg.data.tokenizer)
    ids = tok.encode(text)
    if not ids:
        raise ValueError("the text is empty after tokenization")
    result = retrieval_view.inspect_retrieval(engine, ids, decode=tok.decode)
    os.makedirs(args.out, exist_ok=True)
    ev.write_json(os.path.join(args.out, "retrieval.json"), result)
    retrieval_view.plot_heatmaps(result, os.path.join(args.out, "retrieval.png"))
    print(f"{len(result['groups'][0])} chunks, {len(result['groups'])} groups -> {args.out}")


if __name__ == "__main__":
    sys.exit(_common.run(main))
