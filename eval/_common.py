"""Shared CLI plumbing of the eval commands: arguments, logging, model loading, error exit."""

import argparse
import logging
import sys


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """Arguments every eval command takes: config/checkpoint, overrides, engine options."""
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--config", default=None, help="YAML config (optional with --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="checkpoint step/root/run dir; none = random")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. kernel_backend=xla")
    p.add_argument("--segment_chunks", type=int, default=None, help="default eval.segment_chunks")
    p.add_argument("--offload", action="store_true", help="chunk K/V in host memory")
    p.add_argument("--seed", type=int, default=0, help="init seed (no checkpoint) and sampling")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers extra model types); repeatable",
    )
    return p


def setup(args, *, needs: str | None = None):
    """Logs versions, loads the model and builds its scorer; returns (scorer, cfg).

    The scorer comes from the model's registered capabilities
    (``gca_jax.inference.make_scorer``): segmented prefill when the model has it, else one full
    forward per sequence. ``needs`` names a capability the command requires (e.g. ``decode``);
    a model without it is an error naming the model and the capability.
    """
    # force: importing absl (for grain's flags) has already put a WARNING-level handler on root.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("absl").setLevel(logging.WARNING)
    import flax
    import jax

    from gca_jax.inference import make_scorer
    from gca_jax.inference.loading import load_for_eval
    from gca_jax.modeling import load_plugins, require

    log = logging.getLogger("eval")
    log.info("jax %s, flax %s, devices %s", jax.__version__, flax.__version__, jax.devices())
    load_plugins(args.plugin)
    model, cfg = load_for_eval(
        args.config, args.overrides, checkpoint=args.checkpoint, seed=args.seed
    )
    log.info("config: %s", cfg.to_dict())
    if needs is not None:
        require(cfg.model, needs)
    chunks = args.segment_chunks or cfg.eval.segment_chunks
    return make_scorer(model, segment_chunks=chunks, offload=args.offload), cfg


def corpus_or_builtin(corpus: str | None, out_dir: str, tokenizer: str) -> str:
    """The given corpus, or the built-in validation corpus prepared under ``out_dir``."""
    if corpus is not None:
        return corpus
    import os

    from gca_jax.data import prepare_builtin_corpus

    path = os.path.join(out_dir, "builtin_validation")
    prepare_builtin_corpus(path, tokenizer, split="validation")
    return path


def run(main, argv=None) -> int:
    """Runs ``main(argv)``; user errors print one line and exit with status 2."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:  # ConfigError, MissingCapabilityError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
