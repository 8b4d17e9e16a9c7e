import dataclasses
import pathlib

import pytest

from gca_jax.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
S = 15  # tiny.yaml's model.retrieval.chunk_len; swa_lm inputs use the same lengths


def tiny_model_config(*, retrieval: dict | None = None, **changes):
    """The tiny.yaml model in float32 (exact comparisons), with optional field changes.

    ``retrieval`` changes fields of the ``model.retrieval`` section (DRT). A model type that
    does not read that section (``swa_lm``) gets none.
    """
    cfg = load_config(ROOT / "configs" / "tiny.yaml").model
    section = cfg.retrieval
    if changes.get("model_type", cfg.model_type) == "drt":
        section = dataclasses.replace(section, **(retrieval or {}))
    else:
        assert retrieval is None, "only DRT reads model.retrieval"
        section = None
    return dataclasses.replace(cfg, dtype="float32", **{"retrieval": section, **changes})


@pytest.fixture
def tiny_cfg():
    return tiny_model_config()
