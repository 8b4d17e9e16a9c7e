"""Train: `python -m train --config configs/x.yaml [key=value ...] [--output_dir D] [--fresh]`.

Restarting the same command resumes from the newest readable checkpoint in D/checkpoints;
`--init_from CKPT` takes only the weights of another run (fine-tuning); `--fresh` starts over.
"""

import argparse
import logging
import os
import sys


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--config", required=True, help="YAML experiment config (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.add_argument("--output_dir", default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--init_from", default=None, help="checkpoint whose weights start the run")
    p.add_argument("--fresh", action="store_true", help="delete this run's checkpoints first")
    p.add_argument("--seed", type=int, default=None, help="shorthand for train.seed=N")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers extra model types); repeatable",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2 for config errors)."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes.
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags (docs/stack-notes.md §3)
    from gca_jax.config import ConfigError, load_config
    from gca_jax.modeling import check_config, load_plugins

    overrides = list(args.overrides) + (
        [f"train.seed={args.seed}"] if args.seed is not None else []
    )
    try:
        load_plugins(args.plugin)
        cfg = check_config(load_config(args.config, overrides))
    except (ValueError, FileNotFoundError) as e:  # ConfigError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from gca_jax.training import RunOptions, train
    from gca_jax.training.runtime import maybe_initialize_distributed

    maybe_initialize_distributed()
    name = os.path.splitext(os.path.basename(args.config))[0]
    opts = RunOptions(
        output_dir=args.output_dir or os.path.join("runs", name),
        fresh=args.fresh,
        init_from=args.init_from,
    )
    bar = tqdm(total=cfg.train.steps, desc="train", unit="step", dynamic_ncols=True)

    def progress(step, scalars):
        bar.n = step
        if scalars:
            bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
            tqdm.write(
                f"step {step:6d}  loss {scalars['loss']:.4f}  ppl {scalars['ppl']:.2f}  "
                f"grad_norm {scalars['grad_norm']:.3f}  tokens/s {scalars['tokens_per_s']:.0f}"
            )
        bar.refresh()

    try:
        result = train(cfg, opts, progress)
    except ConfigError as e:  # a rule that needs the devices, e.g. batch vs mesh
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar.close()
    loss = result.last_metrics.get("loss", float("nan"))
    print(f"done: step {int(result.state.step)}, final loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
