"""Train: `python -m train --config configs/x.yaml [key=value ...] [--output_dir D] [--fresh]`.

Restarting the same command resumes from the newest intact checkpoint in D/checkpoints;
`--init_from CKPT` takes only the weights of another run (fine-tuning); `--fresh` moves the
previous run aside (to D/previous/<time>) and starts over. Expected errors print one `error:`
line and exit 2 (docs/reliability.md); `--debug` shows their traceback.
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
    p.add_argument("--fresh", action="store_true", help="move the previous run aside, start over")
    p.add_argument("--seed", type=int, default=None, help="shorthand for train.seed=N")
    p.add_argument("--debug", action="store_true", help="tracebacks for expected errors too")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers extra model types); repeatable",
    )
    return p.parse_args(argv)


def _train(args) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from absl import flags
    from absl import logging as absl_logging  # Before getLogger("absl"): absl's own logger.

    absl_logging.get_absl_logger().setLevel(logging.WARNING)  # Orbax logs every file it writes.

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags (docs/stack-notes.md §3)
    from gca_jax.cli import UserError
    from gca_jax.config import load_config
    from gca_jax.modeling import check_config, load_plugins
    from gca_jax.training.preflight import check_config_file

    seed = [f"train.seed={args.seed}"] if args.seed is not None else []
    load_plugins(args.plugin)
    check_config_file(args.config)
    cfg = check_config(load_config(args.config, list(args.overrides) + seed))
    from tqdm import tqdm

    from gca_jax.training import RunOptions, train
    from gca_jax.training.runtime import maybe_initialize_distributed, warn_if_gpu_unused

    maybe_initialize_distributed()
    warn_if_gpu_unused()
    name = os.path.splitext(os.path.basename(args.config))[0]
    out = args.output_dir or os.path.join("runs", name)
    opts = RunOptions(output_dir=out, fresh=args.fresh, init_from=args.init_from)
    bars = []  # Created at the first step, so that a startup error prints no empty bar.

    def progress(step, scalars):
        if not bars:
            bars.append(tqdm(total=cfg.train.steps, desc="train", unit="step", dynamic_ncols=True))
        bars[0].n = step
        if scalars:
            bars[0].set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
            tqdm.write(
                f"step {step:6d}  loss {scalars['loss']:.4f}  ppl {scalars['ppl']:.2f}  "
                f"grad_norm {scalars['grad_norm']:.3f}  tokens/s {scalars['tokens_per_s']:.0f}"
            )
        bars[0].refresh()

    try:
        result = train(cfg, opts, progress)
    except FloatingPointError as e:
        raise UserError(
            f"training diverged: {e}; the checkpoints in {out} hold the last finite state: "
            "lower train.lr or check the data, then resume"
        ) from e
    finally:
        for bar in bars:
            bar.close()
    step = int(result.state.step)
    if not result.last_metrics:
        print(f"done: step {step}, nothing left to train (train.steps={cfg.train.steps})")
        return
    if not result.final_step_finite:
        raise UserError(
            f"the run ended non-finite: step {step}'s loss or update was not finite (skipped); "
            f"the checkpoint at step {step} holds the last finite state"
        )
    print(f"done: step {step}, final loss {result.last_metrics['loss']:.4f}")


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2 for expected errors, docs/reliability.md)."""
    args = _parse(argv)
    from gca_jax import cli

    return cli.run(lambda: _train(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
