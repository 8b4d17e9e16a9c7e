"""Models for evaluation: a config (random init) or a training checkpoint, and its tokenizer.

A checkpoint step directory (``gca_jax.checkpoint`` layout ``<dir>/<step>/{state, config}``)
carries the resolved config of its run; its ``model`` section is authoritative. Only the
parameters are read (the pure-dict ``params`` of the saved TrainState) and checked for
structure, shape and dtype against the model the config builds.
"""

import dataclasses
import logging
import os

import jax
import numpy as np
from flax import nnx

from gca_jax.config import Config, config_from_dict, load_config
from gca_jax.modeling import build_model

_log = logging.getLogger(__name__)

# Model fields that may differ between a checkpoint and the evaluation config (execution only).
_EXECUTION_FIELDS = ("kernel_backend", "remat", "loss_block", "dtype")


def _checkpoint_config(step_dir: str) -> Config:
    from gca_jax.checkpoint import read_config  # Lazy: imports grain and orbax.

    return config_from_dict(read_config(step_dir))


def _check_same_model(saved: Config, asked: Config, where: str) -> None:
    """Raises if the config asks for another architecture than the checkpoint holds."""
    if saved.model.model_type != asked.model.model_type:
        raise ValueError(
            f"checkpoint {where} holds model_type={saved.model.model_type!r}, but the config asks "
            f"for model_type={asked.model.model_type!r}; pass a matching --config or none"
        )
    diffs = [
        f"{f.name}: checkpoint={getattr(saved.model, f.name)!r} vs "
        f"config={getattr(asked.model, f.name)!r}"
        for f in dataclasses.fields(saved.model)
        if f.name not in _EXECUTION_FIELDS
        and getattr(saved.model, f.name) != getattr(asked.model, f.name)
    ]
    if diffs:
        raise ValueError(f"checkpoint {where} and config differ in model: {'; '.join(diffs)}")


def _path_key(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _restore_params(step_dir: str, model: nnx.Module) -> nnx.Module:
    """Reads the saved params into ``model`` after checking every leaf's shape and dtype."""
    import orbax.checkpoint as ocp  # Lazy: only checkpoint loading needs it.

    graphdef, state = nnx.split(model)
    target = nnx.to_pure_dict(state)
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.restore(os.path.join(step_dir, "state"))
    params = saved["params"] if isinstance(saved, dict) else saved.params
    # Orbax may restore integer keys (layer lists) as strings: match leaves by printed path.
    got = {_path_key(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    paths, treedef = jax.tree_util.tree_flatten_with_path(target)
    missing = sorted({_path_key(p) for p, _ in paths} ^ set(got))
    if missing:
        raise ValueError(
            f"checkpoint {step_dir}: parameter tree differs from the model's at {missing[:5]}"
        )
    leaves = []
    for path, want in paths:
        leaf = got[_path_key(path)]
        if leaf.shape != want.shape or np.dtype(leaf.dtype) != np.dtype(want.dtype):
            raise ValueError(
                f"checkpoint {step_dir}: {'/'.join(_path_key(path))} is {leaf.shape} "
                f"{leaf.dtype}, the model expects {want.shape} {want.dtype}"
            )
        leaves.append(jax.numpy.asarray(leaf))
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, leaves))
    return nnx.merge(graphdef, state)


def load_for_eval(
    config_path: str | None,
    overrides: list[str] = (),
    *,
    checkpoint: str | None = None,
    seed: int = 0,
) -> tuple[nnx.Module, Config]:
    """Builds the model to evaluate.

    Args:
      config_path: YAML config; optional with a checkpoint (its saved config is used).
      overrides: ``key=value`` overrides (e.g. ``model.kernel_backend=pallas``).
      checkpoint: a checkpoint step directory, root or run directory; None = random init.
      seed: parameter init seed without a checkpoint.

    Returns:
      (model, resolved config).

    Raises:
      ValueError: neither config nor checkpoint, or a checkpoint of another model.
      FileNotFoundError: no checkpoint at ``checkpoint``.
    """
    if checkpoint is None:
        if config_path is None:
            raise ValueError("give --config (random init) or --checkpoint")
        cfg = load_config(config_path, list(overrides))
        return build_model(cfg.model, rngs=nnx.Rngs(seed)), cfg
    from gca_jax.checkpoint import resolve_step_dir  # Lazy: imports grain and orbax.

    step_dir = resolve_step_dir(checkpoint)
    saved = _checkpoint_config(step_dir)
    if config_path is not None:
        cfg = load_config(config_path, list(overrides))
        _check_same_model(saved, cfg, step_dir)
    else:
        raw = saved.to_dict()
        from gca_jax.config import parse_overrides

        for section, values in parse_overrides(list(overrides)).items():
            raw[section].update(values)
        cfg = config_from_dict(raw)
    model = build_model(cfg.model, rngs=nnx.Rngs(seed))
    _log.info("restoring parameters from %s", step_dir)
    return _restore_params(step_dir, model), cfg


def check_corpus_tokenizer(cfg: Config, corpus_dir: str):
    """Loads ``data.tokenizer`` and checks it against the corpus manifest and the model.

    Returns:
      The tokenizer.

    Raises:
      ValueError: the corpus was prepared with another tokenizer, or the tokenizer's special ids
        disagree with the model config.
    """
    from gca_jax.data import check_tokenizer_matches, load_tokenizer

    tok = load_tokenizer(cfg.data.tokenizer)
    try:
        check_tokenizer_matches(corpus_dir, tok.identity)
    except ValueError as e:
        raise ValueError(
            f"the checkpoint/config tokenizer data.tokenizer={cfg.data.tokenizer!r} does not match "
            f"the corpus: {e}"
        ) from e
    m = cfg.model
    got = (tok.vocab_size, tok.pad_id, tok.landmark_id)
    if got != (m.vocab_size, m.pad_id, m.landmark_id):
        raise ValueError(
            f"tokenizer {cfg.data.tokenizer!r} has (vocab_size, pad_id, landmark_id)={got}, the "
            f"model has {(m.vocab_size, m.pad_id, m.landmark_id)}"
        )
    return tok
