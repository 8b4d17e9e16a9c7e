"""The model registry: model types, capabilities, FLOPs and statistics all come from the class."""

import re

import pytest
from flax import nnx

from gca_jax.config import Config, ConfigError, load_config
from gca_jax.modeling import (
    DECODE,
    DRT,
    MODELS,
    PREFILL,
    RETRIEVAL,
    SCORE,
    LandmarkLM,
    LanguageModel,
    MissingCapabilityError,
    SlidingWindowLM,
    build_model,
    check_config,
    flops_per_token,
    load_plugins,
    model_class,
    register_model,
    registry,
    require,
    stat_names,
)
from tests.modeling.conftest import tiny_model_config

SWA = ["model.model_type=swa_lm", "model.retrieval=null"]


def test_registered_types_and_their_capabilities():
    # Other tests may register plugin models (tests/modeling/dummy_lm.py) into the same dict.
    builtin = {"drt": DRT, "landmark": LandmarkLM, "swa_lm": SlidingWindowLM}
    assert {name: MODELS[name] for name in builtin} == builtin
    assert DRT.capabilities == {SCORE, PREFILL, DECODE, RETRIEVAL}
    assert SlidingWindowLM.capabilities == {SCORE, PREFILL, DECODE}
    assert LandmarkLM.capabilities == {SCORE, PREFILL, DECODE}
    assert model_class("drt") is DRT


def test_an_unknown_model_type_lists_the_registered_ones():
    cfg = load_config(None, ["model.model_type=drtt"])
    message = re.escape(f"model.model_type='drtt': must be one of {sorted(MODELS)}")
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg.model)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, rngs=nnx.Rngs(0))
    assert isinstance(check_config(load_config("configs/tiny.yaml")), Config)


def test_require_names_the_model_and_the_capability():
    import tests.modeling.dummy_lm  # noqa: F401  (registers the score-only model_type dummy_bag)

    swa = load_config("configs/tiny.yaml", SWA).model
    assert require(swa, SCORE) is require(swa, DECODE) is SlidingWindowLM
    bag = load_config("configs/tiny.yaml", ["model.model_type=dummy_bag", "model.retrieval=null"])
    for capability, words in (
        (DECODE, "incremental decoding (eval.generate)"),
        (PREFILL, "segmented long-context prefill (bounded memory at any length, --offload)"),
        (RETRIEVAL, "retrieval records per chunk (eval.inspect_retrieval)"),
    ):
        with pytest.raises(MissingCapabilityError) as e:
            require(bag.model, capability)
        assert f"model_type='dummy_bag' (CausalBagLM) does not support {words}" in str(e.value)
        assert "it supports: full-forward scoring" in str(e.value)
    assert isinstance(e.value, ValueError)  # the CLIs report it as a user error (exit 2)
    with pytest.raises(MissingCapabilityError, match="swa_lm.*retrieval records"):
        require(swa, RETRIEVAL)
    assert require(load_config("configs/tiny.yaml").model, DECODE) is DRT
    with pytest.raises(KeyError, match="unknown capability 'teleport'"):
        require(swa, "teleport")


def test_register_model(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))  # undone after the test

    class Other(SlidingWindowLM):
        pass

    register_model("other_lm", Other)
    register_model("other_lm", Other)  # the same class again: a no-op
    assert model_class("other_lm") is Other
    with pytest.raises(ValueError, match="model_type 'swa_lm' is already registered"):
        register_model("swa_lm", Other)
    with pytest.raises(TypeError, match="is not a LanguageModel"):
        register_model("plain", nnx.Module)
    assert issubclass(Other, LanguageModel) and "other_lm" not in MODELS


def test_a_plugin_that_cannot_be_imported_is_a_clear_error():
    with pytest.raises(ValueError, match="--plugin no_such_module_xyz: cannot import it"):
        load_plugins(["no_such_module_xyz"])


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        # The values of the formula in gca_jax/training/metrics.py before it moved to the models.
        ("drt_128m_pg19", [], 977202614.8571428),
        ("drt_128m_x2_pg19", [], 977202614.8571428),
        ("swa_128m", [], 797962752.0),
        ("swa_128m", ["model.window=-1"], 1647032832.0),
        ("swa_128m_plus2", [], 892353024.0),
        ("tiny", [], 1484800.0),
    ],
)
def test_flops_per_token_of_the_shipped_configs(name, overrides, expected):
    cfg = load_config(f"configs/{name}.yaml", overrides)
    assert flops_per_token(cfg.model, cfg.data.seq_len) == pytest.approx(expected, rel=1e-12)


def test_stat_names_are_the_statistics_the_forward_returns():
    drt = tiny_model_config()
    assert stat_names(drt) == (
        "ret_top_weight_g0",
        "ret_entropy_g0",
        "ret_distance_g0",
        "ret_top_weight_g1",
        "ret_entropy_g1",
        "ret_distance_g1",
    )
    assert stat_names(tiny_model_config(model_type="swa_lm", num_layers=2)) == ()
