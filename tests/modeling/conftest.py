import dataclasses
import pathlib

import pytest

from gca_jax.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_model_config(**changes):
    """The tiny.yaml model in float32 (exact comparisons), with optional field changes."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml").model
    return dataclasses.replace(cfg, dtype="float32", **changes)


@pytest.fixture
def tiny_cfg():
    return tiny_model_config()
