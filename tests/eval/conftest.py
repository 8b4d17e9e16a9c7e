"""Fixtures for eval tests: the built-in validation corpus prepared once per session."""

import pytest


@pytest.fixture(scope="session")
def builtin_corpus(tmp_path_factory):
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from gca_jax.data import prepare_builtin_corpus

    path = tmp_path_factory.mktemp("corpus") / "validation"
    prepare_builtin_corpus(str(path), "bytes", split="validation")
    return str(path)


@pytest.fixture(scope="session")
def tiny_model():
    """Random-init tiny DRT (configs/tiny.yaml) in float32."""
    from flax import nnx

    from gca_jax.modeling import build_model
    from tests.modeling.conftest import tiny_model_config

    return build_model(tiny_model_config(), rngs=nnx.Rngs(0))
