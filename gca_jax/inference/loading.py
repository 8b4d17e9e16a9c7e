"""Models for evaluation: a config (random init) or a training checkpoint, and its tokenizer.

A checkpoint step directory (``gca_jax.checkpoint`` layout ``<dir>/<step>/{state, config}``)
carries the resolved config of its run; its ``model`` section is authoritative. Only the
parameters are read, through the same restore path as fine-tuning
(``gca_jax.checkpoint.restore_params``: abstract target, check, update).
"""

import logging

import jax
from flax import nnx

from gca_jax import checkpoint as ckpt_lib
from gca_jax.config import Config, config_from_dict, load_config, merge_raw, parse_overrides
from gca_jax.modeling import build_model, check_config

_log = logging.getLogger(__name__)

# Model fields that may differ between a checkpoint and the evaluation config (execution only).
_EXECUTION_FIELDS = ("kernel_backend", "remat", "loss_block", "dtype")


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
        raise ValueError(f"checkpoint {where} and config differ in model: {'; '.join(diffs)}")


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
        cfg = check_config(load_config(config_path, list(overrides)))
        return build_model(cfg.model, rngs=nnx.Rngs(seed)), cfg
    step_dir = ckpt_lib.resolve_step_dir(checkpoint, flag="--checkpoint")
    saved = config_from_dict(ckpt_lib.read_config(step_dir))
    if config_path is not None:
        cfg = load_config(config_path, list(overrides))
        _check_same_model(saved, cfg, step_dir)
    else:
        cfg = config_from_dict(merge_raw(saved.to_dict(), parse_overrides(list(overrides))))
    check_config(cfg)
    _log.info("restoring parameters from %s", step_dir)
    return restore_model(cfg, step_dir), cfg


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
