"""Shared CLI plumbing of the eval commands: arguments, logging, model loading, output checks.

Every command follows the error convention of ``gca_jax.cli`` (docs/reliability.md): an expected
error prints one ``error: ...`` line and exits with status 2 (its traceback only with ``--debug``).
"""

import argparse
import logging
import os
import sys


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """Arguments every eval command takes: config/checkpoint, overrides, engine options."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None, help="YAML config (optional with --checkpoint)")
    p.add_argument(
        "--checkpoint", default=None, help="run dir, its checkpoints/ (newest step) or one step"
    )
    p.add_argument(
        "--random_init",
        action="store_true",
        help="score random weights of --config instead of a checkpoint (smoke tests only)",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. kernel_backend=xla")
    p.add_argument("--segment_chunks", type=int, default=None, help="default eval.segment_chunks")
    p.add_argument("--offload", action="store_true", help="chunk K/V in host memory")
    p.add_argument("--seed", type=int, default=0, help="init seed (--random_init) and sampling")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers extra model types); repeatable",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors too")
    return p


def setup(args, *, needs: str | None = None, announce=None):
    """Logs versions, loads the model and builds its scorer; returns (scorer, cfg, origin).

    The scorer comes from the model's registered capabilities
    (``gca_jax.inference.make_scorer``): segmented prefill when the model has it, else one full
    forward per sequence. ``needs`` names a capability the command requires (e.g. ``decode``);
    a model without it is an error naming the model and the capability. The line saying which
    checkpoint step (or random weights) is evaluated goes to ``announce`` (default stdout).
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
    from gca_jax.training.runtime import warn_if_gpu_unused

    log = logging.getLogger("eval")
    log.info("jax %s, flax %s, devices %s", jax.__version__, flax.__version__, jax.devices())
    warn_if_gpu_unused()
    load_plugins(args.plugin)
    model, cfg, origin = load_for_eval(
        args.config,
        args.overrides,
        checkpoint=args.checkpoint,
        random_init=args.random_init,
        seed=args.seed,
    )
    log.info("config: %s", cfg.to_dict())
    print(origin.describe(), file=announce or sys.stdout, flush=True)
    if needs is not None:
        require(cfg.model, needs)
    chunks = args.segment_chunks or cfg.eval.segment_chunks
    return make_scorer(model, segment_chunks=chunks, offload=args.offload), cfg, origin


def output_dir(path: str, *, flag: str = "--out") -> str:
    """Creates ``path`` (a directory) and checks that it can be written, before any work.

    Raises:
      ValueError: it cannot be created (e.g. a file is in the way) or is not writable.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"{flag} {path}: cannot create the output directory ({e.strerror or e}); pass a "
            "writable directory"
        ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the output directory is not writable; pass another one")
    return path


def read_text_file(path: str, *, flag: str) -> str:
    """The UTF-8 text of the file ``path``; a directory, missing or binary file is a ValueError."""
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not an existing file"
        raise ValueError(f"{flag} {path} is {what}; pass a text file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{flag} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def lengths(text: str, *, flag: str = "--lengths") -> list[int]:
    """``4k,16k`` -> [4096, 16384]; a bad entry is a ValueError naming ``flag``."""
    from gca_jax.inference.evaluation import parse_length

    try:
        return [parse_length(x) for x in text.split(",")]
    except ValueError as e:
        raise ValueError(f"{flag} {text}: {e}") from e


def corpus_and_tokenizer(corpus: str | None, out_dir: str, cfg):
    """(corpus, tokenizer): ``--corpus`` or the built-in validation text prepared under ``out_dir``.

    The tokenizer is ``data.tokenizer``, checked against the model and the corpus manifest
    (``gca_jax.inference.loading.check_corpus_tokenizer``).
    """
    from gca_jax.inference.loading import check_corpus_tokenizer, load_tokenizer_for

    if corpus is None:
        from gca_jax.data import prepare_builtin_corpus

        load_tokenizer_for(cfg)  # a bad data.tokenizer named before anything is prepared
        corpus = os.path.join(out_dir, "builtin_validation")
        prepare_builtin_corpus(corpus, cfg.data.tokenizer, split="validation")
    return corpus, check_corpus_tokenizer(cfg, corpus, flag="--corpus")
