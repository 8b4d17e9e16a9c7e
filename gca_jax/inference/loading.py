"""Models for evaluation: a training checkpoint (or, on request, random weights) and its tokenizer.

A checkpoint step directory (``gca_jax.checkpoint`` layout ``<dir>/<step>/{state, config}``)
carries the resolved config of its run; its ``model`` section is authoritative. Only the
parameters are read, through the same restore path as fine-tuning
(``gca_jax.checkpoint.restore_params``: abstract target, check, update). Random weights are never
a default: they need ``random_init=True`` (the eval commands' ``--random_init``), and the returned
``ModelOrigin`` says which step, or that the weights are random (docs/inference.md).
"""

import dataclasses
import logging
import os

import jax
import yaml
from flax import nnx

from gca_jax import checkpoint as ckpt_lib
from gca_jax.cli import UserError
from gca_jax.config import Config, config_from_dict, load_config, merge_raw, parse_overrides
from gca_jax.modeling import build_model, check_config

_log = logging.getLogger(__name__)

# Model fields that may differ between a checkpoint and the evaluation config (execution only).
_EXECUTION_FIELDS = ("kernel_backend", "remat", "loss_block", "dtype")


@dataclasses.dataclass(frozen=True)
class ModelOrigin:
    """Where the evaluated weights came from: one checkpoint step, or a random init.

    Attributes:
      checkpoint: the step directory read; None for random weights.
      step: its training step (the directory's name); None for random weights.
      seed: the init seed of random weights; None for a checkpoint.
    """

    checkpoint: str | None
    step: int | None
    seed: int | None = None

    @property
    def is_random(self) -> bool:
        """Whether the weights are a random init (``--random_init``)."""
        return self.checkpoint is None

    def describe(self) -> str:
        """One line for the console, e.g. ``model: checkpoint step 8 (runs/tiny/checkpoints/8)``."""
        if self.is_random:
            return (
                f"model: RANDOM weights (--random_init, seed {self.seed}); "
                "the scores say nothing about a trained model"
            )
        return f"model: checkpoint step {self.step} ({self.checkpoint})"

    def to_dict(self) -> dict:
        """The JSON record of the origin (``checkpoint``, ``step``, ``random_init``, ``seed``)."""
        return {
            "checkpoint": self.checkpoint,
            "step": self.step,
            "random_init": self.is_random,
            "seed": self.seed,
        }


def _flat(tree: dict, prefix: str = "model") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def _check_same_model(saved: Config, asked: Config, where: str) -> None:
    """Raises if the config asks for another architecture than the checkpoint holds."""
    if saved.model.model_type != asked.model.model_type:
        raise ValueError(
            f"checkpoint {where} holds model_type={saved.model.model_type!r}, but the config asks "
            f"for model_type={asked.model.model_type!r}; pass a matching --config or none"
        )
    got, want = _flat(saved.to_dict()["model"]), _flat(asked.to_dict()["model"])
    skip = {f"model.{f}" for f in _EXECUTION_FIELDS}
    diffs = [
        f"{k}: checkpoint={got.get(k)!r} vs config={want.get(k)!r}"
        for k in sorted(set(got) | set(want))
        if k not in skip and got.get(k) != want.get(k)
    ]
    if diffs:
        raise ValueError(
            f"checkpoint {where} and config differ in model: {'; '.join(diffs)}; "
            "drop --config (the checkpoint's own config is used) or pass the run's config"
        )


def _load_config_file(path: str, overrides: list[str]) -> Config:
    """``load_config`` whose file errors name ``--config`` (malformed or empty YAML)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--config {path}: no such file") from e
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not a YAML text file ({e})") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"--config {path}: malformed YAML ({problem}{where}); fix the file") from e
    if raw is None:
        raise ValueError(
            f"--config {path} is empty; give a config with a model section (e.g. configs/tiny.yaml)"
        )
    return load_config(path, list(overrides))


def restore_model(cfg: Config, checkpoint: str, *, flag: str = "--checkpoint") -> nnx.Module:
    """The model of ``cfg`` with the parameters of ``checkpoint`` (nothing initialised first)."""
    abstract = nnx.eval_shape(lambda: build_model(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nnx.to_pure_dict(state),
    )
    nnx.replace_by_pure_dict(state, ckpt_lib.restore_params(checkpoint, target, flag=flag))
    return nnx.merge(graphdef, state)


def _other_steps(step_dir: str) -> str:
    """`` (other steps in ROOT: 4, 2; pass one as --checkpoint ROOT/4)`` or ``""``."""
    root, name = os.path.split(step_dir)
    steps = sorted(
        (int(n) for n in os.listdir(root) if n.isdigit() and n != name),
        reverse=True,
    )
    if not steps:
        return "; no other step is there"
    listed = ", ".join(str(s) for s in steps)
    return f"; other steps in {root}: {listed} (pass one, e.g. --checkpoint {root}/{steps[0]})"


def _read_saved_config(step_dir: str) -> Config:
    """The config saved with a step; an unreadable one is an error naming ``--checkpoint``."""
    try:
        raw = ckpt_lib.read_config(step_dir)
    except (OSError, ValueError) as e:  # ValueError: a garbled JSON file
        raise ValueError(
            f"--checkpoint {step_dir}: its saved config is unreadable ({e}){_other_steps(step_dir)}"
        ) from e
    return config_from_dict(raw)


def load_for_eval(
    config_path: str | None,
    overrides: list[str] = (),
    *,
    checkpoint: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> tuple[nnx.Module, Config, ModelOrigin]:
    """Builds the model to evaluate.

    Args:
      config_path: YAML config; optional with a checkpoint (its saved config is used).
      overrides: ``key=value`` overrides (e.g. ``model.kernel_backend=pallas``).
      checkpoint: a checkpoint step directory, root or run directory (its newest step).
      random_init: random weights from ``config_path`` instead of a checkpoint (smoke tests).
      seed: parameter init seed of ``random_init``.

    Returns:
      (model, resolved config, origin of the weights).

    Raises:
      ValueError: neither or both of checkpoint and random_init, random_init without a config, a
        malformed or empty config file, a checkpoint of another model, or a damaged checkpoint
        (the message lists the other steps of its directory).
      FileNotFoundError: no checkpoint at ``checkpoint``, no file at ``config_path``.
    """
    if checkpoint is not None and random_init:
        raise ValueError(
            "--checkpoint and --random_init exclude each other: drop --random_init to evaluate "
            f"the checkpoint {checkpoint}"
        )
    if checkpoint is None:
        if not random_init:
            raise ValueError(
                "no model to evaluate: pass --checkpoint DIR (a run directory, its checkpoints/ "
                "or one step) or, for random weights (smoke tests only), --random_init --config"
            )
        if config_path is None:
            raise ValueError("--random_init needs --config (the model to initialise)")
        cfg = check_config(_load_config_file(config_path, overrides))
        _log.warning("evaluating RANDOM weights (--random_init, seed %d), no checkpoint", seed)
        return build_model(cfg.model, rngs=nnx.Rngs(seed)), cfg, ModelOrigin(None, None, seed)
    step_dir = ckpt_lib.resolve_step_dir(checkpoint, flag="--checkpoint")
    saved = _read_saved_config(step_dir)
    if config_path is not None:
        cfg = _load_config_file(config_path, overrides)
        _check_same_model(saved, cfg, step_dir)
    else:
        cfg = config_from_dict(merge_raw(saved.to_dict(), parse_overrides(list(overrides))))
    check_config(cfg)
    name = os.path.basename(step_dir)
    origin = ModelOrigin(step_dir, int(name) if name.isdigit() else None)
    _log.info("restoring parameters of step %s from %s", origin.step, step_dir)
    try:
        model = restore_model(cfg, step_dir)
    except (ValueError, UserError) as e:  # UserError: every check of the step failed
        raise type(e)(f"{e}{_other_steps(step_dir)}") from e
    return model, cfg, origin


def check_corpus_tokenizer(cfg: Config, corpus_dir: str, *, flag: str = "--corpus"):
    """Loads ``data.tokenizer`` and checks it against the corpus manifest and the model.

    Args:
      cfg: the resolved config of the evaluated model.
      corpus_dir: a prepared corpus directory.
      flag: the command-line flag that gave ``corpus_dir``, named in the errors.

    Returns:
      The tokenizer.

    Raises:
      ValueError: a missing or incomplete corpus, a tokenizer that cannot be loaded, a corpus
        prepared with another tokenizer, or tokenizer special ids that disagree with the model.
    """
    from gca_jax.data import check_tokenizer_matches, read_manifest

    try:
        manifest = read_manifest(corpus_dir)
    except ValueError as e:
        raise ValueError(f"{flag} {corpus_dir}: {e}") from e
    tok = load_tokenizer_for(cfg)
    try:
        check_tokenizer_matches(manifest, tok.identity)
    except ValueError as e:
        raise ValueError(
            f"{flag} {corpus_dir} does not match the checkpoint/config tokenizer "
            f"data.tokenizer={cfg.data.tokenizer!r}: {e}"
        ) from e
    return tok


def load_tokenizer_for(cfg: Config):
    """``data.tokenizer``, checked against the model's vocabulary and special ids.

    Raises:
      ValueError: the tokenizer cannot be loaded, or its (vocab_size, pad_id, landmark_id)
        differ from the model's; the message names ``data.tokenizer`` and the model keys.
    """
    from gca_jax.data import load_tokenizer

    spec = cfg.data.tokenizer
    try:
        tok = load_tokenizer(spec)
    except ValueError as e:
        raise ValueError(
            f"data.tokenizer={spec!r} cannot be loaded: {e}; pass data.tokenizer=PATH (the "
            "tokenizer.json the model was trained with, or 'bytes')"
        ) from e
    m = cfg.model
    got = (tok.vocab_size, tok.pad_id, tok.landmark_id)
    if got != (m.vocab_size, m.pad_id, m.landmark_id):
        raise ValueError(
            f"data.tokenizer={spec!r} has (vocab_size, pad_id, landmark_id)={got}, the model "
            f"has (model.vocab_size, model.pad_id, model.landmark_id)="
            f"{(m.vocab_size, m.pad_id, m.landmark_id)}; pass the tokenizer the model was "
            "trained with as data.tokenizer=..."
        )
    return tok
