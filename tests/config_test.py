import dataclasses
import pathlib

import pytest

from gca_jax.config import ConfigError, load_config

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.data.seq_len % cfg.model.chunk_len == 0


def test_paper_configs_are_faithful():
    x1 = load_config(pathlib.Path("configs/drt_128m_pg19.yaml")).model
    assert (x1.hidden_size, x1.num_heads, x1.mlp_hidden, x1.window) == (768, 12, 2048, 512)
    assert (x1.chunk_len, x1.chunk_topk, x1.encoder_layers) == (63, 8, 2)
    assert x1.decoder_layers == (6, 6) and x1.num_groups == 1 and x1.memory_slots == 64
    x2 = load_config(pathlib.Path("configs/drt_128m_x2_pg19.yaml")).model
    assert x2.decoder_layers == (6, 3, 3) and x2.num_groups == 2
    assert load_config(pathlib.Path("configs/swa_128m.yaml")).model.num_layers == 12
    assert load_config(pathlib.Path("configs/swa_128m_plus2.yaml")).model.num_layers == 14
    train = load_config(pathlib.Path("configs/drt_128m_pg19.yaml")).train
    assert (train.lr, train.weight_decay, train.warmup_steps, train.steps) == (
        2e-3,
        1e-3,
        1200,
        60000,
    )


def test_overrides_are_typed_and_applied():
    cfg = load_config(
        None,
        [
            "model.window=256",
            "lr=1e-3",
            "model.decoder_layers=[2,1,1]",
            "data.corpus_dir=null",
            "model.gca_null_slot=false",
        ],
    )
    assert cfg.model.window == 256 and cfg.train.lr == 1e-3
    assert cfg.model.decoder_layers == (2, 1, 1) and cfg.data.corpus_dir is None
    assert cfg.model.gca_null_slot is False and cfg.model.memory_slots == 63
    assert isinstance(cfg.train.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.window = 3


@pytest.mark.parametrize(
    "override, message",
    [
        (["windw=3"], "unknown key 'windw'; did you mean 'model.window'"),
        (["model.chunk_topk=0"], "model.chunk_topk=0: must be >= 1"),
        (["model.window=0"], "model.window=0: must be >= 1, or -1"),
        (["model.window=abc"], "model.window='abc': expected an int"),
        (["model.decoder_layers=[6,0]"], "model.decoder_layers=[6, 0]: must be a non-empty list"),
        (["model.decoder_layers=6"], "model.decoder_layers=6: expected a list of int"),
        (["model.decoder_layers=[6]"], "DRT needs [lower, group1, ...]"),
        (["model.num_heads=5"], "model.hidden_size=768: must be divisible by num_heads=5"),
        (["model.num_kv_heads=5"], "model.num_kv_heads=5: must divide num_heads=12"),
        (["data.seq_len=100"], "data.seq_len=100: must be a multiple of model.chunk_len=63"),
        (["train.lr=true"], "train.lr=True: expected a float"),
        (["model.kernel_backend=cuda"], "model.kernel_backend='cuda': must be one of"),
        (
            ["modle.window=3"],
            "unknown section 'modle' in override 'modle.window'; did you mean 'model'",
        ),
        (["model.windows=3"], "unknown key model.windows; did you mean 'window'"),
        (["seed=1"], "key 'seed' is ambiguous"),
        (["novalue"], "must look like key=value"),
        (["mesh.data=-1", "mesh.fsdp=-1"], "at most one axis may be -1"),
    ],
)
def test_config_errors_name_key_value_and_rule(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert message in str(e.value)


def test_unknown_yaml_key_suggests_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  chunk_top_k: 4\n")
    with pytest.raises(
        ConfigError, match="unknown key model.chunk_top_k; did you mean 'chunk_topk'"
    ):
        load_config(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
