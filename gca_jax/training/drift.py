"""Config drift on resume: the config saved with a checkpoint vs the one given now.

Keys fall in three classes (docs/reliability.md):
- *refused*: what the saved state or data position means: the architecture (``model.*`` except
  how it is computed) and the data stream (tokenizer, sequence length, batch, order, NIAH mix,
  summarization task and summary length). Resuming would fail on shapes or silently train on
  something else, so it is an error listing the keys, with the hint to use a new output
  directory or ``--init_from``.
- *warned*: the optimiser, the schedule, the seed, the compute dtype and the corpus and pairs
  locations: a resumed run may change them on purpose; a warning names each one.
- everything else (logging and checkpoint cadence, evaluation, mesh, kernels, remat) silently.
"""

import logging
from typing import Any

from gca_jax.config import ConfigError, config_from_dict

logger = logging.getLogger(__name__)

# Model keys that change how the model is computed, not what its parameters are.
_MODEL_EXECUTION = ("model.kernel_backend", "model.remat", "model.loss_block")
_WARNED_MODEL = ("model.dtype",)
_REFUSED_DATA = (
    "data.tokenizer",
    "data.seq_len",
    "data.batch_size",
    "data.seed",
    "data.align_to_doc_start",
    "data.niah_fraction",
    "data.niah_task",
    "data.niah_chunk_len",
    "data.task",
    "data.max_summary_len",
)
_WARNED = (
    "train.lr",
    "train.min_lr",
    "train.warmup_steps",
    "train.steps",
    "train.weight_decay",
    "train.b1",
    "train.b2",
    "train.eps",
    "train.clip_norm",
    "train.grad_accum",
    "train.seed",
    "data.corpus_dir",
    "data.eval_corpus_dir",
    "data.summary_dir",
    "data.answer_weight",
)


class ConfigDriftError(ValueError):
    """The config differs from the checkpoint's in keys that a resume cannot change."""


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"retrieval": {"top_k": 3}}}`` -> ``{"model.retrieval.top_k": 3}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _refused(key: str) -> bool:
    if key.startswith("model."):
        return key not in _MODEL_EXECUTION + _WARNED_MODEL
    return key in _REFUSED_DATA


def _normalized(saved: dict) -> dict:
    """The saved config with the defaults of keys added to the schema since it was saved."""
    try:
        return config_from_dict(saved).to_dict()
    except ConfigError:  # A key the schema no longer has: compare what both hold.
        return saved


def differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, current value)} for every key both hold with other values.

    A key only one side holds (the schema changed in between) is not a difference.
    """
    a, b = flatten(_normalized(saved)), flatten(current)
    keys = sorted(a.keys() & b.keys())
    # Tuples and lists compare equal here: JSON turned the saved tuples into lists.
    return {k: (a[k], b[k]) for k in keys if _plain(a[k]) != _plain(b[k])}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_resume(saved: dict, current: dict, *, step: int, where: str) -> None:
    """Refuses a resume across an architecture or data change; warns about optimiser changes.

    Args:
      saved: the config saved with the checkpoint (``Config.to_dict`` layout).
      current: the config of this run, same layout.
      step: the checkpoint's step, named in the messages.
      where: the checkpoint directory, named in the messages.

    Raises:
      ConfigDriftError: listing every refused key with both values.
    """
    diffs = differences(saved, current)
    shown = lambda keys: "; ".join(
        f"{k}: checkpoint={diffs[k][0]!r} vs now={diffs[k][1]!r}" for k in keys
    )
    refused = [k for k in diffs if _refused(k)]
    if refused:
        raise ConfigDriftError(
            f"the config differs from the one of the checkpoint at step {step} in {where} in "
            f"keys a resume cannot change ({shown(refused)}): run it in a new --output_dir "
            "(with --init_from to start from these weights), or restore the old values"
        )
    warned = [k for k in diffs if k in _WARNED or k in _WARNED_MODEL]
    if warned:
        logger.warning("resuming from step %d with changed settings: %s", step, shown(warned))
