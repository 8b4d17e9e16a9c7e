import dataclasses
import pathlib

import pytest

from gca_jax.config import ConfigError, config_from_dict, load_config

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.data.seq_len % cfg.model.token_multiple == 0
    assert (cfg.model.retrieval is not None) == (cfg.model.model_type in ("drt", "rpt"))
    assert config_from_dict(cfg.to_dict()) == cfg  # what is saved beside a checkpoint reloads


def test_paper_configs_are_faithful():
    x1 = load_config(pathlib.Path("configs/drt_128m_pg19.yaml")).model
    assert (x1.hidden_size, x1.num_heads, x1.mlp_hidden, x1.window) == (768, 12, 2048, 512)
    r1 = x1.retrieval
    assert (r1.chunk_len, r1.top_k, r1.encoder_layers) == (63, 8, 2)
    # 6 lower + 6 upper layers, one retrieval group.
    assert x1.num_layers == 12 and r1.group_layers == (6,) and r1.num_groups == 1
    assert r1.memory_slots == 64 and r1.slots_per_chunk == 64 and x1.token_multiple == 63
    x2 = load_config(pathlib.Path("configs/drt_128m_x2_pg19.yaml")).model
    assert x2.num_layers == 12 and x2.retrieval.group_layers == (3, 3)  # 6 lower + 3 + 3
    assert x2.retrieval.num_groups == 2
    swa = load_config(pathlib.Path("configs/swa_128m.yaml")).model
    assert swa.num_layers == 12 and swa.retrieval is None and swa.token_multiple == 1
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
            "model.num_layers=4",
            "model.retrieval.group_layers=[1,1]",
            "data.corpus_dir=null",
            "model.retrieval.null_slot=false",
            "top_k=4",  # a bare key of the retrieval section
        ],
    )
    assert cfg.model.window == 256 and cfg.train.lr == 1e-3
    assert cfg.model.num_layers == 4 and cfg.model.retrieval.group_layers == (1, 1)
    assert cfg.data.corpus_dir is None and cfg.model.retrieval.top_k == 4
    assert cfg.model.retrieval.null_slot is False and cfg.model.retrieval.memory_slots == 63
    assert cfg.model.retrieval.chunk_len == 63  # the other fields keep their defaults
    assert isinstance(cfg.train.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.window = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.retrieval.top_k = 3


def test_overrides_merge_into_the_yaml_retrieval_section():
    cfg = load_config("configs/tiny.yaml", ["model.retrieval.top_k=2"]).model
    assert cfg.retrieval.top_k == 2
    assert (cfg.retrieval.chunk_len, cfg.retrieval.group_layers) == (15, (1, 1))  # from the YAML


def test_variants_in_python_are_validated():
    cfg = load_config("configs/tiny.yaml").model
    variant = dataclasses.replace(
        cfg, retrieval=dataclasses.replace(cfg.retrieval, chunk_len=16, group_layers=(1,))
    )
    assert variant.token_multiple == 16 and variant.retrieval.num_groups == 1
    with pytest.raises(ConfigError, match="model.num_layers=3: must exceed the upper layers"):
        dataclasses.replace(cfg, retrieval=dataclasses.replace(cfg.retrieval, group_layers=(2, 1)))


@pytest.mark.parametrize(
    "override, message",
    [
        (["windw=3"], "unknown key 'windw'; did you mean 'model.window'"),
        (["model.retrieval.top_k=0"], "model.retrieval.top_k=0: must be >= 1"),
        (["model.retrieval.chunk_len=0"], "model.retrieval.chunk_len=0: must be >= 1"),
        (["model.retrieval.encoder_layers=0"], "model.retrieval.encoder_layers=0: must be >= 1"),
        (["model.window=0"], "model.window=0: must be >= 1, or -1"),
        (["model.window=abc"], "model.window='abc': expected an int"),
        (
            ["model.retrieval.group_layers=[6,0]"],
            "model.retrieval.group_layers=[6, 0]: must be a non-empty list",
        ),
        (
            ["model.retrieval.group_layers=[]"],
            "model.retrieval.group_layers=[]: must be a non-empty",
        ),
        (["model.retrieval.group_layers=6"], "model.retrieval.group_layers=6: expected a list of"),
        (
            ["model.num_layers=6"],  # all 6 are upper layers: no lower stack
            "model.num_layers=6: must exceed the upper layers sum(model.retrieval.group_layers)=6",
        ),
        (["model.num_layers=0"], "model.num_layers=0: must be >= 1"),
        (["model.retrieval=3"], "model.retrieval must be a mapping of RetrievalConfig keys"),
        (["model.retrieval.topk=3"], "unknown key model.retrieval.topk; did you mean 'top_k'"),
        (["model.num_heads=5"], "model.hidden_size=768: must be divisible by num_heads=5"),
        (["model.num_kv_heads=5"], "model.num_kv_heads=5: must divide num_heads=12"),
        (
            ["data.seq_len=100"],
            "data.seq_len=100: must be a multiple of model.retrieval.chunk_len=63",
        ),
        (["train.lr=true"], "train.lr=True: expected a float"),
        (["model.kernel_backend=cuda"], "model.kernel_backend='cuda': must be one of ['auto'"),
        (["model.remat=some"], "model.remat='some': must be one of ['none', 'full', 'dots']"),
        (["model.dtype=fp16"], "model.dtype='fp16': must be one of ['bfloat16', 'float32']"),
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
    path.write_text("model:\n  retrieval:\n    chunk_top_k: 4\n")
    with pytest.raises(
        ConfigError, match="unknown key model.retrieval.chunk_top_k; did you mean 'top_k'"
    ):
        load_config(path)


MOVED = {  # old key: (a value, its new place)
    "chunk_len": (21, "model.retrieval.chunk_len"),  # divides the default seq_len
    "chunk_topk": (4, "model.retrieval.top_k"),
    "gca_null_slot": (False, "model.retrieval.null_slot"),
    "encoder_layers": (1, "model.retrieval.encoder_layers"),
    "encoder_rms_norm_eps": (1e-5, "model.retrieval.encoder_rms_norm_eps"),
    "rope_theta": (500.0, "model.retrieval.rope_theta"),
}


@pytest.mark.parametrize("key", sorted(MOVED))
def test_keys_of_the_flat_layout_name_their_new_place(key, tmp_path):
    value, new = MOVED[key]
    message = f"model.{key} moved to {new}"
    text = str(value).lower()  # YAML spelling
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"model.{key}={text}"])
    path = tmp_path / "old.yaml"
    path.write_text(f"model:\n  {key}: {text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    # A bare key goes to the field of that name, wherever it lives now; a renamed one errs.
    name = new.rsplit(".", 1)[1]
    if name == key:
        assert getattr(load_config(None, [f"{key}={text}"]).model.retrieval, name) == value
    else:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"{key}={text}"])


def test_decoder_layers_names_num_layers_and_group_layers(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  decoder_layers: [6, 3, 3]\n")
    want = (
        "model.decoder_layers=[6, 3, 3] moved: write model.num_layers: 12 and, for DRT, "
        "model.retrieval.group_layers: [3, 3]"
    )
    for load in (lambda: load_config(path), lambda: load_config(None, ["decoder_layers=[1,1,1]"])):
        with pytest.raises(ConfigError, match="model.num_layers.*model.retrieval.group_layers"):
            load()
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert want in str(e.value)


def test_a_retrieval_section_on_swa_lm_is_rejected():
    with pytest.raises(
        ConfigError, match="model.retrieval is set, but model_type='swa_lm' does not read it"
    ):
        load_config("configs/tiny.yaml", ["model.model_type=swa_lm"])
    swa = load_config("configs/tiny.yaml", ["model.model_type=swa_lm", "model.retrieval=null"])
    assert swa.model.retrieval is None and swa.model.token_multiple == 1
    assert swa.niah_chunk_len is None
    # DRT without the section gets its defaults.
    assert load_config(None).model.retrieval.chunk_len == 63


def test_niah_chunk_len_is_the_model_chunk_unless_set():
    assert load_config("configs/tiny.yaml").niah_chunk_len == 15
    assert load_config("configs/niah_swa_small.yaml").niah_chunk_len == 64
    swa = ["model.model_type=swa_lm", "model.retrieval=null", "data.niah_fraction=0.5"]
    with pytest.raises(ConfigError, match="data.niah_chunk_len: must be set: model_type='swa_lm'"):
        load_config("configs/tiny.yaml", swa)
    cfg = load_config("configs/tiny.yaml", swa + ["data.niah_chunk_len=16"])
    assert cfg.niah_chunk_len == 16 and cfg.data.seq_len == 240
    with pytest.raises(ConfigError, match="data.seq_len=240: must be a multiple of c=7"):
        load_config("configs/tiny.yaml", swa + ["data.niah_chunk_len=7"])


def test_model_type_is_checked_against_the_registry():
    from gca_jax.modeling import check_config

    cfg = load_config(None, ["model.model_type=nope"])  # loads: the registry decides
    assert cfg.model.retrieval is None
    with pytest.raises(ConfigError, match=r"model.model_type='nope': must be one of \[") as e:
        check_config(cfg)
    assert "'drt'" in str(e.value) and "'landmark'" in str(e.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_an_empty_config_file_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path)
