"""The training loop: init or resume, dispatch steps, checkpoint, log, evaluate.

The loop dispatches step n before it reads step n-1's metrics to the host, so host-side work
(logging, NaN checks, the next batch) overlaps device work. Checkpoints are saved with the grain
iterator state at the same step; restarting the same command resumes from the newest intact
checkpoint and replays exactly the batches and Gumbel noise of an uninterrupted run.
SIGTERM (a scheduler's preemption, `timeout`) stops the loop after the step in flight and saves a
checkpoint there first, so a stopped run loses nothing; SIGKILL loses the steps since the last save.

Before anything is written the run's inputs are checked (``preflight``); then the output
directory is locked against a second run (``rundir``), a resume is checked for config drift
(``drift``), and a checkpoint save that fails stops training at once (docs/reliability.md).
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable

import jax

from gca_jax import checkpoint as ckpt_lib
from gca_jax import sharding as shard_lib
from gca_jax.config import Config, ConfigError
from gca_jax.modeling import flops_per_token, stat_names
from gca_jax.training import drift, inputs, preflight, rundir
from gca_jax.training.evaluation import Evaluator, best_value
from gca_jax.training.metrics import MetricsWriter, peak_flops
from gca_jax.training.optimizer import lr_schedule, make_optimizer
from gca_jax.training.state import TrainState, abstract_state, init_state
from gca_jax.training.step import make_train_step

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict[str, float] | None], None]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where and how to run (the CLI flags besides the config)."""

    output_dir: str
    fresh: bool = False  # move the previous run's records aside first (rundir.move_aside)
    init_from: str | None = None  # checkpoint to take the initial weights from (fine-tuning)


@dataclasses.dataclass
class TrainResult:
    """What a finished run hands back."""

    state: TrainState
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    final_step_finite: bool = True  # False: the last step's loss or update was not finite


def log_startup(cfg: Config, mesh) -> None:
    """Logs versions, devices, mesh, seed and the resolved config."""
    import flax

    logger.info(
        "jax %s, flax %s, backend %s", jax.__version__, flax.__version__, jax.default_backend()
    )
    logger.info(
        "process %d/%d, %d devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
        sorted({d.device_kind for d in jax.devices()}),
    )
    logger.info("mesh %s, seed %d", dict(mesh.shape), cfg.train.seed)
    logger.info("config %s", json.dumps(cfg.to_dict(), sort_keys=True))


def _host_scalars(metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


class Trainer:
    """One training run of ``cfg`` in ``opts.output_dir``.

    Args:
      cfg: the resolved config.
      opts: output directory, --fresh and --init_from.
      mesh: the device mesh (default: from ``cfg.mesh`` over all devices).
    """

    def __init__(self, cfg: Config, opts: RunOptions, mesh=None):
        self.cfg, self.opts = cfg, opts
        self.mesh = shard_lib.make_mesh(cfg.mesh) if mesh is None else mesh
        shards = shard_lib.batch_shards(self.mesh)
        if cfg.data.batch_size % shards:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size}: must be divisible by the mesh's "
                f"{shards} batch shards (mesh.data x mesh.fsdp over {self.mesh.size} devices)"
            )
        self.is_main = jax.process_index() == 0
        self.tx = make_optimizer(cfg.train)
        self.schedule = lr_schedule(cfg.train)
        self.ckpt: ckpt_lib.Checkpointer | None = None  # created by run(), in the locked dir
        self.writer: MetricsWriter | None = None
        self.tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
        peak = peak_flops(jax.devices()[0])
        self.peak_total = None if peak is None else peak * jax.device_count()
        self.flops_per_token = flops_per_token(cfg.model, cfg.data.seq_len)
        self.stat_names = stat_names(cfg.model)
        self._best: float | None = None  # best eval value (lower is better)

    # -- setup -----------------------------------------------------------------------------------

    def _init_or_restore(self, data_iter) -> TrainState:
        cfg = self.cfg
        self.mdef, abstract, self.shardings = abstract_state(
            cfg.model, cfg.train.seed, self.tx, self.mesh
        )
        current = cfg.to_dict()
        restored = self.ckpt.restore_latest(
            abstract,
            data_iter,
            check_config=lambda saved, step: drift.check_resume(
                saved, current, step=step, where=self.ckpt.directory
            ),
        )
        if restored is not None:
            logger.info("resuming from step %d", restored[0])
            return restored[1]
        _, state, _ = init_state(cfg.model, cfg.train.seed, self.tx, self.mesh)
        if self.opts.init_from:
            params = ckpt_lib.restore_params(
                self.opts.init_from, abstract.params, flag="--init_from"
            )
            state = state.replace(params=params)
        return state

    def _save_best(self, step: int, state: TrainState, value: float) -> None:
        """Keeps the state of the best eval so far in ``<output_dir>/best`` (one checkpoint)."""
        best_dir = os.path.join(self.opts.output_dir, "best")
        record = os.path.join(best_dir, "best.json")
        if self._best is None and os.path.exists(record):  # from before a restart
            with open(record) as f:
                self._best = json.load(f)["value"]
        if self._best is not None and self._best <= value:
            return
        self._best = value
        ckptr = ckpt_lib.Checkpointer(best_dir, keep=1, use_async=False)
        ckptr.save(step, state, None, self.cfg.to_dict())
        ckptr.close()
        if self.is_main:
            with open(record, "w") as f:
                json.dump({"step": step, "value": value}, f)
        logger.info("best checkpoint: step %d (value %.4f)", step, value)

    # -- loop ------------------------------------------------------------------------------------

    def run(self, progress: ProgressFn | None = None) -> TrainResult:
        """Trains to ``train.steps`` (resuming if checkpoints exist) and returns the final state.

        Raises:
          ValueError: a failed startup check, another live run in the output directory, or a
            config that the checkpoint's model or data cannot be resumed with.
          DamagedCheckpointError: checkpoints exist but none is intact.
          CheckpointSaveError: a checkpoint could not be written (training stopped there).
          FloatingPointError: ``train.max_consecutive_skips`` non-finite steps in a row.
        """
        preflight.check_run(self.cfg, self.opts.init_from)
        out = self.opts.output_dir
        lock = rundir.locked(out) if self.is_main else contextlib.nullcontext(out)
        with lock:
            if self.opts.fresh and self.is_main:
                rundir.move_aside(out)
            try:
                result = self._run(progress)
            except BaseException:
                self._close_writer(failing=True)
                raise
            self._close_writer(failing=False)
            return result

    def _close_writer(self, *, failing: bool) -> None:
        """Closes the metrics writer; while another error stops the run, its own is logged."""
        if self.writer is None:
            return
        try:
            self.writer.close()
        except OSError as e:
            if not failing:
                raise
            logger.warning("closing the metrics writer failed too: %s", e)

    def _run(self, progress: ProgressFn | None) -> TrainResult:
        cfg = self.cfg
        train_dir, eval_dir = inputs.resolve_corpora(cfg, self.opts.output_dir)
        data_iter = inputs.train_iterator(cfg, train_dir)
        log_startup(cfg, self.mesh)
        ckpt_dir = os.path.join(self.opts.output_dir, "checkpoints")
        self.ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=cfg.train.keep_checkpoints)
        try:
            state = self._init_or_restore(data_iter)
            self.writer = MetricsWriter(
                self.opts.output_dir, enabled=self.is_main, resume_step=int(state.step)
            )
            result = self._loop(state, data_iter, eval_dir, progress)
        except BaseException as e:
            save_error = self.ckpt.abort()
            if save_error is not None and isinstance(e, OSError):
                # The disk a save filled failed a metrics write first: the save's message says
                # what is kept.
                raise save_error from e
            if save_error is not None:
                logger.error("%s", save_error)
            raise
        self.ckpt.close()  # A failed final save raises here.
        return result

    def _loop(self, state: TrainState, data_iter, eval_dir, progress) -> TrainResult:
        cfg, tcfg = self.cfg, self.cfg.train
        start = int(state.step)
        evaluator = Evaluator(cfg, self.mdef, self.shardings.params, self.mesh, eval_dir)
        batch_sh = shard_lib.batch_sharding(self.mesh)  # every batch entry: (B, T)
        step_fn = jax.jit(
            make_train_step(self.mdef, self.tx, self.schedule, tcfg),
            in_shardings=(self.shardings, batch_sh),
            out_shardings=(self.shardings, None),
            donate_argnames=("state",),
        )
        self.ckpt.prepare(state)
        self._clock = (time.perf_counter(), start)
        self._skips_in_row = 0
        pending, last, evals = None, {}, {}
        with jax.set_mesh(self.mesh), _stop_on_sigterm() as stop:
            for step in range(start, tcfg.steps):
                batch = shard_lib.global_batch(next(data_iter), self.mesh)
                state, metrics = step_fn(state, batch)
                self.ckpt.check()  # A failed background save stops training here.
                if pending is not None:
                    last = self._report(*pending, progress) or last
                pending = (step + 1, metrics)
                done = step + 1
                saved = done % tcfg.save_every == 0 or done == tcfg.steps
                if saved:
                    self.ckpt.save(done, state, data_iter, cfg.to_dict())
                if tcfg.eval_every and (done % tcfg.eval_every == 0 or done == tcfg.steps):
                    evals = self._evaluate(done, state, evaluator)
                if stop.is_set():
                    logger.warning("SIGTERM: stopping after step %d with a checkpoint", done)
                    if not saved:
                        self.ckpt.save(done, state, data_iter, cfg.to_dict())
                    break
            finite = True
            if pending is not None:
                last = self._report(*pending, progress, force_log=True) or last
                finite = bool(pending[1]["is_finite"])
        return TrainResult(
            state=state, last_metrics=last, eval_metrics=evals, final_step_finite=finite
        )

    def _evaluate(self, step: int, state: TrainState, evaluator: Evaluator) -> dict[str, float]:
        out = evaluator(state.params)
        if out:
            self.writer.write(step, out, prefix="eval")
            logger.info("eval step %d: %s", step, {k: round(v, 4) for k, v in out.items()})
            value = best_value(out)
            if value is not None:
                self._save_best(step, state, value)
        return out

    def _report(
        self, step: int, metrics, progress: ProgressFn | None, force_log: bool = False
    ) -> dict[str, float] | None:
        """Host side of step ``step`` (one step behind dispatch): NaN check, logging, progress."""
        is_finite = bool(metrics["is_finite"])
        if not is_finite:
            self._skips_in_row += 1
            logger.warning(
                "step %d: non-finite loss, gradient or update; step skipped (%d in a row, %d "
                "total)",
                step,
                self._skips_in_row,
                int(metrics["skipped"]),
            )
            if self._skips_in_row >= self.cfg.train.max_consecutive_skips:
                raise FloatingPointError(
                    f"step {step}: {self._skips_in_row} consecutive non-finite steps "
                    f"(train.max_consecutive_skips={self.cfg.train.max_consecutive_skips})"
                )
        else:
            self._skips_in_row = 0
        scalars = None
        if step % self.cfg.train.log_every == 0 or force_log:
            scalars = self._scalars(step, metrics)
            self.writer.write(step, scalars)
        if progress is not None:
            progress(step, scalars)
        return scalars

    def _scalars(self, step: int, metrics) -> dict[str, float]:
        host = _host_scalars(metrics)
        now = time.perf_counter()
        t0, s0 = self._clock
        self._clock = (now, step)
        tokens_per_s = (step - s0) * self.tokens_per_step / max(now - t0, 1e-9)
        out = {
            "loss": host["loss"],
            "ppl": math.exp(min(host["loss"], 50.0)),
            "lr": host["lr"],
            "grad_norm": host["grad_norm"],
            "tokens_per_s": tokens_per_s,
            "skipped": host["skipped"],
        }
        if self.peak_total:
            out["mfu"] = self.flops_per_token * tokens_per_s / self.peak_total
        out.update({name: host[name] for name in self.stat_names})  # the model's own statistics
        return out


@contextlib.contextmanager
def _stop_on_sigterm():
    """Yields an Event set by SIGTERM while the block runs (main thread only; else never set)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(cfg: Config, opts: RunOptions, progress: ProgressFn | None = None) -> TrainResult:
    """Runs (or resumes) a training run; see ``Trainer``."""
    return Trainer(cfg, opts).run(progress)


__all__ = ["RunOptions", "TrainResult", "Trainer", "log_startup", "train"]
