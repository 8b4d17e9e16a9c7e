"""Which past chunks each chunk retrieved, with what weight, per group: JSON and heat maps.

python -m eval.inspect_retrieval --checkpoint RUN_DIR --text_file notes.txt \
    --out runs/inspect [--config CFG] [--text "..."] [key=value ...]
(--random_init --config CFG instead of --checkpoint: random weights, for smoke tests.)
Writes retrieval.json (with the checkpoint step) and retrieval.png (query chunk vs retrieved
chunk, one panel per group).
"""

import os
import sys

from eval import _common
from gca_jax import cli


def main(argv=None) -> int:
    """Parses arguments, runs the text through the model, writes JSON and PNG; returns status."""
    p = _common.parser("python -m eval.inspect_retrieval", __doc__)
    p.add_argument("--text", default=None, help="the text to inspect")
    p.add_argument("--text_file", default=None, help="or a file holding it")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    return cli.run(lambda: _run(args), debug=args.debug)


def _run(args) -> None:
    if (args.text is None) == (args.text_file is None):
        raise ValueError("give exactly one of --text and --text_file")
    if args.text is not None:
        text = args.text
    else:
        text = _common.read_text_file(args.text_file, flag="--text_file")
    from gca_jax.inference import evaluation as ev
    from gca_jax.inference import retrieval_view
    from gca_jax.inference.loading import load_tokenizer_for

    _common.output_dir(args.out)
    engine, cfg, origin = _common.setup(args, needs="retrieval")
    tok = load_tokenizer_for(cfg)
    ids = tok.encode(text)
    if not ids:
        raise ValueError("the text is empty after tokenization; give some text")
    result = retrieval_view.inspect_retrieval(engine, ids, decode=tok.decode)
    result = {**origin.to_dict(), **result}
    ev.write_json(os.path.join(args.out, "retrieval.json"), result)
    retrieval_view.plot_heatmaps(result, os.path.join(args.out, "retrieval.png"))
    print(f"{len(result['groups'][0])} chunks, {len(result['groups'])} groups -> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
