"""Typed, frozen experiment configs: YAML files set values, ``key=value`` overrides adjust them.

One schema for every run. A YAML file has up to five sections (``model``, ``data``, ``train``,
``eval``, ``mesh``); an override is ``section.key=value`` or a bare ``key=value`` when the key
names exactly one field across sections. Every value is type-checked, unknown keys are errors
that suggest the closest valid key, and cross-field rules are checked at load time, so a bad
config fails before any compilation.

Glossary of shape letters (docs/architecture.md): S = ``chunk_len`` raw tokens per chunk,
P = S + 1 slots per chunk (the landmark is slot S), K = ``chunk_topk``, W = ``window``,
D = ``hidden_size``, H = ``num_heads``, Hkv = ``num_kv_heads``, d = D / H, F = ``mlp_hidden``,
V = ``vocab_size``, T = ``data.seq_len`` raw tokens, C = T / S chunks.
"""

import dataclasses
import difflib
import pathlib
import types
import typing
from typing import Any, Literal

import yaml

MODEL_TYPES = ("drt", "swa_lm")
KERNEL_BACKENDS = ("auto", "xla", "pallas", "interpret")
REMAT_POLICIES = ("none", "full", "dots")


class ConfigError(ValueError):
    """A config value that breaks a rule; the message names the key, the value and the rule."""


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture of DRT (spec §1) or of the sliding-window baseline."""

    model_type: str = "drt"  # "drt" or "swa_lm" (the BaseLM baseline; window -1 = full attention)
    vocab_size: int = 50265  # V, including the special ids
    pad_id: int = 50257  # embedding row kept at zero; negative input ids map here
    landmark_id: int = 50264  # the landmark token appended to every chunk
    hidden_size: int = 768  # D
    num_heads: int = 12  # H, for decoder, encoder and GCA
    num_kv_heads: int = 12  # Hkv of decoder self-attention
    mlp_hidden: int = 2048  # F, SwiGLU width
    decoder_layers: tuple[int, ...] = (6, 6)  # [lower, group 1, ...]; swa_lm uses their sum
    encoder_layers: int = 2  # chunk-encoder depth
    chunk_len: int = 63  # S raw tokens per chunk
    chunk_topk: int = 8  # K chunks retrieved per group
    window: int = 512  # W: keys j with 0 <= i - j <= W are visible; -1 = full causal attention
    gca_null_slot: bool = True  # zero the landmark K/V slot (off-by-one softmax) or drop it
    rms_norm_eps: float = 1e-5  # decoder, encoder pre-norm, final and landmark norms
    encoder_rms_norm_eps: float = 1e-6  # norms inside the chunk encoder (spec §1.6)
    rope_theta: float = 10000.0  # RoPE base of the chunk encoder
    init_std: float = 0.02  # N(0, std) init of every weight matrix and the embedding
    dtype: str = "bfloat16"  # compute dtype of matmuls
    param_dtype: str = "float32"  # storage dtype of parameters
    kernel_backend: str = "auto"  # "auto" | "xla" | "pallas" | "interpret" for attention kernels
    remat: str = "full"  # per-layer rematerialisation: "none" | "full" | "dots"
    loss_block: int = 4096  # tokens per block of the chunked cross-entropy

    def __post_init__(self):
        _check_choice("model.model_type", self.model_type, MODEL_TYPES)
        _check_choice("model.kernel_backend", self.kernel_backend, KERNEL_BACKENDS)
        _check_choice("model.remat", self.remat, REMAT_POLICIES)
        _check_choice("model.dtype", self.dtype, ("bfloat16", "float32"))
        _check_choice("model.param_dtype", self.param_dtype, ("float32", "bfloat16"))
        for key in (
            "vocab_size",
            "hidden_size",
            "num_heads",
            "num_kv_heads",
            "mlp_hidden",
            "chunk_len",
            "loss_block",
        ):
            _check(self, f"model.{key}", getattr(self, key) >= 1, "must be >= 1")
        _check(self, "model.chunk_topk", self.chunk_topk >= 1, "must be >= 1")
        _check(self, "model.encoder_layers", self.encoder_layers >= 0, "must be >= 0")
        _check(
            self,
            "model.window",
            self.window == -1 or self.window >= 1,
            "must be >= 1, or -1 for full causal attention",
        )
        _check(
            self,
            "model.hidden_size",
            self.hidden_size % self.num_heads == 0,
            f"must be divisible by num_heads={self.num_heads}",
        )
        _check(
            self,
            "model.num_kv_heads",
            self.num_heads % self.num_kv_heads == 0,
            f"must divide num_heads={self.num_heads}",
        )
        _check(
            self,
            "model.pad_id",
            0 <= self.pad_id < self.vocab_size,
            f"must be in [0, {self.vocab_size})",
        )
        _check(
            self,
            "model.landmark_id",
            0 <= self.landmark_id < self.vocab_size,
            f"must be in [0, {self.vocab_size})",
        )
        layers = self.decoder_layers
        _check(
            self,
            "model.decoder_layers",
            len(layers) >= 1 and all(n >= 1 for n in layers),
            "must be a non-empty list of positive layer counts, e.g. [6, 6]",
        )
        if self.model_type == "drt":
            _check(
                self,
                "model.decoder_layers",
                len(layers) >= 2,
                "DRT needs [lower, group1, ...]: at least one retrieval group, e.g. [6, 6]",
            )
            _check(
                self,
                "model.encoder_layers",
                self.encoder_layers >= 1,
                "DRT needs a chunk encoder (>= 1)",
            )

    @property
    def head_dim(self) -> int:
        """D."""
        return self.hidden_size // self.num_heads

    @property
    def slots_per_chunk(self) -> int:
        """P = S + 1: the chunk's raw tokens plus its landmark."""
        return self.chunk_len + 1

    @property
    def memory_slots(self) -> int:
        """P': K/V slots per memory chunk (landmark slot zeroed, or dropped; spec §1.7)."""
        return self.slots_per_chunk if self.gca_null_slot else self.chunk_len

    @property
    def num_groups(self) -> int:
        """G retrieval groups."""
        return len(self.decoder_layers) - 1 if self.model_type == "drt" else 0

    @property
    def num_layers(self) -> int:
        """Decoder layers in total (lower plus upper)."""
        return sum(self.decoder_layers)


@dataclasses.dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the tokens come from."""

    corpus_dir: str | None = None  # prepared corpus (train.prepare); null = built-in demo corpus
    eval_corpus_dir: str | None = None  # held-out corpus for periodic eval; null = none
    tokenizer: str = "bytes"  # "bytes" or a path to a tokenizer.json
    seq_len: int = 16380  # T raw tokens per training sequence (a multiple of chunk_len)
    batch_size: int = 4  # global batch of sequences per optimiser step
    align_to_doc_start: bool = False  # start training windows at document starts
    niah_fraction: float = 0.0  # fraction of training samples turned into NIAH tasks
    niah_task: str = "single"  # "single" | "multi" | "multihop" for niah_fraction > 0
    answer_weight: float = 1.0  # loss weight of NIAH answer tokens (1 = plain LM loss, spec §6.6)
    num_workers: int = 0  # grain worker processes (0 = in-process)
    seed: int = 404  # data order and task sampling

    def __post_init__(self):
        _check(self, "data.seq_len", self.seq_len >= 1, "must be >= 1")
        _check(self, "data.batch_size", self.batch_size >= 1, "must be >= 1")
        _check(self, "data.niah_fraction", 0.0 <= self.niah_fraction <= 1.0, "must be in [0, 1]")
        _check_choice("data.niah_task", self.niah_task, ("single", "multi", "multihop"))
        _check(self, "data.answer_weight", self.answer_weight > 0, "must be > 0")
        _check(self, "data.num_workers", self.num_workers >= 0, "must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimiser, schedule and loop (spec §7)."""

    steps: int = 60000  # optimiser steps
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 0.0  # cosine floor (the original ignores its min_lr and decays to 0)
    warmup_steps: int = 1200  # linear warmup from 0
    weight_decay: float = 1e-3  # decoupled, on all parameters
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-6
    clip_norm: float = 1.0  # global-norm clipping
    grad_accum: int = 1  # micro-batches per optimiser step
    seed: int = 404  # parameter init and Gumbel noise
    log_every: int = 50
    save_every: int = 5000  # checkpoint interval in steps
    keep_checkpoints: int = 2  # most recent checkpoints kept
    eval_every: int = 5000  # periodic evaluation interval; 0 = never
    max_consecutive_skips: int = 10  # raise FloatingPointError after this many non-finite steps

    def __post_init__(self):
        _check(self, "train.steps", self.steps >= 1, "must be >= 1")
        _check(self, "train.lr", self.lr > 0, "must be > 0")
        _check(self, "train.min_lr", 0 <= self.min_lr <= self.lr, f"must be in [0, lr={self.lr}]")
        _check(
            self,
            "train.warmup_steps",
            0 <= self.warmup_steps <= self.steps,
            f"must be in [0, steps={self.steps}]",
        )
        _check(self, "train.grad_accum", self.grad_accum >= 1, "must be >= 1")
        _check(self, "train.clip_norm", self.clip_norm > 0, "must be > 0")
        for key in ("log_every", "save_every", "keep_checkpoints", "max_consecutive_skips"):
            _check(self, f"train.{key}", getattr(self, key) >= 1, "must be >= 1")
        _check(self, "train.eval_every", self.eval_every >= 0, "must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class EvalConfig:
    """Periodic and standalone evaluation."""

    batches: int = 8  # eval batches per periodic perplexity evaluation
    passkey_samples: int = 0  # passkey samples per periodic evaluation; 0 = skip
    passkey_len: int = 4032  # haystack length in raw tokens for the periodic passkey eval
    segment_chunks: int = 256  # chunks per prefill segment in long-context evaluation

    def __post_init__(self):
        _check(self, "eval.batches", self.batches >= 0, "must be >= 0")
        _check(self, "eval.passkey_samples", self.passkey_samples >= 0, "must be >= 0")
        _check(self, "eval.segment_chunks", self.segment_chunks >= 1, "must be >= 1")


@dataclasses.dataclass(frozen=True, slots=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor); one axis may be -1 to take the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = {"mesh.data": self.data, "mesh.fsdp": self.fsdp, "mesh.tensor": self.tensor}
        for key, size in sizes.items():
            _check(
                self, key, size == -1 or size >= 1, "must be >= 1, or -1 for the remaining devices"
            )
        _check(self, "mesh", list(sizes.values()).count(-1) <= 1, "at most one axis may be -1")


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """A whole experiment."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def __post_init__(self):
        s = self.model.chunk_len
        _check(
            self,
            "data.seq_len",
            self.data.seq_len % s == 0,
            f"must be a multiple of model.chunk_len={s} (T = C * S)",
        )
        if self.eval.passkey_samples:
            _check(
                self,
                "eval.passkey_len",
                self.eval.passkey_len % s == 0,
                f"must be a multiple of model.chunk_len={s}",
            )
        _check(
            self,
            "data.batch_size",
            self.data.batch_size % self.train.grad_accum == 0,
            f"must be divisible by train.grad_accum={self.train.grad_accum}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as written next to checkpoints."""
        return {
            name: {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(getattr(self, name)).items()
            }
            for name in SECTIONS
        }


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "mesh": MeshConfig,
}


def _check(obj: Any, key: str, ok: bool, rule: str) -> None:
    """Raises a ConfigError naming ``key``, its value on ``obj`` and the broken ``rule``."""
    if ok:
        return
    section = key.split(".")[0]
    field = key.split(".", 1)[1] if "." in key else key
    if isinstance(obj, Config) and section in SECTIONS:
        obj = getattr(obj, section)
    value = getattr(obj, field, None) if "." in key else None
    shown = (
        f"{key}={list(value) if isinstance(value, tuple) else value!r}"
        if value is not None
        else key
    )
    raise ConfigError(f"config error: {shown}: {rule}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config error: {key}={value!r}: must be one of {list(choices)}")


def _closest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks ``value`` against a field annotation; converts lists to tuples and ints to floats."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"config error: {key}={value!r}: expected {annotation}")
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"config error: {key}={value!r}: expected a list of {item_type.__name__}, "
                "e.g. [6, 6]"
            )
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"config error: {key}={value!r}: expected {annotation}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config error: {key}={value!r}: expected a float")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config error: {key}={value!r}: expected an int")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config error: {key}={value!r}: expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config error: {key}={value!r}: expected a string")
        return value
    raise TypeError(f"unsupported annotation {annotation} for {key}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build_section(name: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[name]
    fields = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"config error: unknown key {name}.{key}{_closest(key, list(fields))}"
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, fields[key])
    return cls(**kwargs)


def _resolve_override_key(key: str) -> tuple[str, str]:
    """Maps ``section.key`` or a bare, unambiguous ``key`` to (section, key)."""
    if "." in key:
        section, field = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(
                f"config error: unknown section {section!r} in override {key!r}"
                f"{_closest(section, list(SECTIONS))}"
            )
        return section, field
    owners = [s for s, cls in SECTIONS.items() if key in _field_types(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(
            f"config error: key {key!r} is ambiguous (in {owners}); write e.g. {owners[0]}.{key}"
        )
    every = [f"{s}.{f}" for s, cls in SECTIONS.items() for f in _field_types(cls)]
    raise ConfigError(f"config error: unknown key {key!r}{_closest(key, every)}")


def parse_overrides(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Parses ``key=value`` strings (values in YAML syntax) into nested section dicts."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config error: override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        section, field = _resolve_override_key(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"config error: cannot parse value of {key}: {raw!r}") from e
        nested.setdefault(section, {})[field] = value
    return nested


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Builds and validates a Config from a nested dict (YAML layout)."""
    if not isinstance(raw, dict):
        raise ConfigError("config error: the top level must be a mapping of sections")
    sections = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"config error: unknown section {name!r}{_closest(name, list(SECTIONS))}"
            )
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config error: section {name!r} must be a mapping")
        sections[name] = _build_section(name, values)
    return Config(**sections)


def load_config(path: str | pathlib.Path | None, overrides: list[str] = ()) -> Config:
    """Loads a YAML config file and applies ``key=value`` overrides.

    Args:
      path: YAML file, or None for the defaults.
      overrides: strings like ``model.window=256`` or ``lr=1e-3``.

    Returns:
      The validated, frozen Config.

    Raises:
      ConfigError: unknown key, wrong type or broken rule; the message names the key.
      FileNotFoundError: the YAML file does not exist.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config error: {path} must hold a mapping of sections")
    for section, values in parse_overrides(list(overrides)).items():
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section].update(values)
    return config_from_dict(raw)
