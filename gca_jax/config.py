"""Typed, frozen experiment configs: YAML files set values, ``key=value`` overrides adjust them.

One schema for every run. A YAML file has up to five sections (``model``, ``data``, ``train``,
``eval``, ``mesh``); a section may hold subsections (``model.retrieval``, the fields of one model
family). An override is ``section.key=value`` (``model.retrieval.top_k=4``) or a bare
``key=value`` when the key names exactly one field. Every value is type-checked, unknown keys are
errors that suggest the closest valid key, keys of the old flat layout name their new place, and
cross-field rules are checked at load time, so a bad config fails before any compilation.

Model families: fields that only one family reads live in its own subsection of ``model``
(``RetrievalConfig`` for DRT). A subsection that the chosen ``model_type`` reads is filled with
its defaults when absent; one it does not read is an error. The valid ``model_type`` values are
those of the model registry (``gca_jax.modeling.registry``), checked when a model is built.

Glossary of shape letters (docs/architecture.md): S = ``retrieval.chunk_len`` raw tokens per
chunk, P = S + 1 slots per chunk (the landmark is slot S), K = ``retrieval.top_k``,
W = ``window``, D = ``hidden_size``, H = ``num_heads``, Hkv = ``num_kv_heads``, d = D / H,
F = ``mlp_hidden``, V = ``vocab_size``, T = ``data.seq_len`` raw tokens, C = T / S chunks.
"""

import dataclasses
import difflib
import pathlib
import types
import typing
from typing import Any, ClassVar, Literal

import yaml

from kernels import BackendOrAuto

RematPolicy = Literal["none", "full", "dots"]  # per-layer rematerialisation (modeling/stack.py)
ComputeDtype = Literal["bfloat16", "float32"]
NiahTask = Literal["single", "multi", "multihop"]
DataTask = Literal["lm", "summarization"]  # what the training batches are (docs/data.md §6)


class ConfigError(ValueError):
    """A config value that breaks a rule; the message names the key, the value and the rule."""


@dataclasses.dataclass(frozen=True, slots=True)
class RetrievalConfig:
    """``model.retrieval``: DRT's chunking, chunk encoder and retrieval (docs/spec.md §1.6-1.8)."""

    # the model types that read this section (RPT: DRT's layout with a fixed retriever)
    model_types: ClassVar[tuple[str, ...]] = ("drt", "rpt")

    group_layers: tuple[int, ...] = (6,)  # upper layers per retrieval group; ret x2 = [3, 3]
    chunk_len: int = 63  # S raw tokens per chunk (a landmark token follows each chunk)
    top_k: int = 8  # K chunks retrieved per group
    null_slot: bool = True  # zero the landmark K/V slot (off-by-one softmax) or drop it
    encoder_layers: int = 2  # chunk-encoder depth
    encoder_rms_norm_eps: float = 1e-6  # norms inside the chunk encoder (docs/spec.md §1.6)
    rope_theta: float = 10000.0  # RoPE base of the chunk encoder

    def __post_init__(self):
        _check(
            self,
            "model.retrieval.group_layers",
            len(self.group_layers) >= 1 and all(n >= 1 for n in self.group_layers),
            "must be a non-empty list of positive layer counts, one per retrieval group, e.g. [6]",
        )
        _check(self, "model.retrieval.chunk_len", self.chunk_len >= 1, "must be >= 1")
        _check(self, "model.retrieval.top_k", self.top_k >= 1, "must be >= 1")
        _check(
            self,
            "model.retrieval.encoder_layers",
            self.encoder_layers >= 1,
            "must be >= 1 (DRT needs a chunk encoder)",
        )

    @property
    def slots_per_chunk(self) -> int:
        """P = S + 1: the chunk's raw tokens plus its landmark."""
        return self.chunk_len + 1

    @property
    def memory_slots(self) -> int:
        """P': K/V slots per memory chunk (landmark slot zeroed, or dropped; docs/spec.md §1.7)."""
        return self.slots_per_chunk if self.null_slot else self.chunk_len

    @property
    def num_groups(self) -> int:
        """G retrieval groups."""
        return len(self.group_layers)


@dataclasses.dataclass(frozen=True, slots=True)
class LandmarkConfig:
    """``model.landmark``: Landmark Attention's blocks (docs/architecture.md, "Model types")."""

    model_types: ClassVar[tuple[str, ...]] = ("landmark",)  # the model types that read this section

    # Names apart from model.retrieval's (top_k, rope_theta), so those bare override keys stay
    # unambiguous.
    block_len: int = 64  # P positions per block: P - 1 raw tokens, then the landmark token
    eval_top_k: int = 4  # blocks retrieved per head and query at long-context evaluation
    eval_window: int = 512  # positions per inference window (a multiple of block_len)
    decoder_rope_theta: float = 10000.0  # RoPE base of every decoder layer's attention

    def __post_init__(self):
        _check(
            self,
            "model.landmark.block_len",
            self.block_len >= 2,
            "must be >= 2 (at least one raw token before each landmark)",
        )
        _check(self, "model.landmark.eval_top_k", self.eval_top_k >= 1, "must be >= 1")
        _check(
            self,
            "model.landmark.eval_window",
            self.eval_window >= self.block_len and self.eval_window % self.block_len == 0,
            f"must be a positive multiple of model.landmark.block_len={self.block_len}",
        )
        _check(
            self, "model.landmark.decoder_rope_theta", self.decoder_rope_theta > 0, "must be > 0"
        )

    @property
    def tokens_per_block(self) -> int:
        """Raw tokens per block, P - 1 (a landmark follows them)."""
        return self.block_len - 1


BRTGate = Literal["fixed", "lstm"]  # state update of the Block-Recurrent Transformer


@dataclasses.dataclass(frozen=True, slots=True)
class BRTConfig:
    """``model.brt``: the Block-Recurrent Transformer (docs/architecture.md, "Model types")."""

    model_types: ClassVar[tuple[str, ...]] = ("brt",)  # the model types that read this section

    block_len: int = 512  # L tokens per block; attention sees its own block and the previous one
    state_len: int = 512  # recurrent state vectors (each of width D)
    recurrent_layer: int = 4  # which layer (counting from 1) holds the recurrent state
    gate: BRTGate = "fixed"  # state update: learned per-dimension mix, or LSTM-style gates
    segment_blocks: int = 2  # blocks per gradient segment; the carry is cut between segments
    state_dropout: float = 0.0  # P(reset a row's state to the initial one) at a segment start
    memory_dropout: float = 0.0  # P(hide a row's previous-block K/V) at a segment start

    def __post_init__(self):
        for key in ("block_len", "state_len", "recurrent_layer", "segment_blocks"):
            _check(self, f"model.brt.{key}", getattr(self, key) >= 1, "must be >= 1")
        for key in ("state_dropout", "memory_dropout"):
            _check(self, f"model.brt.{key}", 0.0 <= getattr(self, key) < 1.0, "must be in [0, 1)")


RPTRetriever = Literal["bm25", "precomputed"]  # where RPT's fixed retrieval scores come from


@dataclasses.dataclass(frozen=True, slots=True)
class RPTConfig:
    """``model.rpt``: the fixed retriever of the RPT-style baseline (docs/architecture.md).

    Everything else (chunking, chunk encoder, GCA layers) is ``model.retrieval``'s, as in DRT.
    """

    model_types: ClassVar[tuple[str, ...]] = ("rpt",)  # the model types that read this section

    retriever: RPTRetriever = "bm25"  # bm25 over token ids, or vectors_fn's chunk vectors
    idf_path: str | None = None  # CORPUS/bm25_idf.npy (train.prepare --bm25-idf); null = uniform
    k1: float = 1.2  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 document-length normalisation
    buckets: int | None = None  # hashed term buckets; null = vocab_size (identity: exact BM25)
    score_scale: float = 1.0  # GCA weights = softmax(score_scale * score) over the top K
    vectors_fn: str | None = None  # retriever precomputed: "package.module:function"

    def __post_init__(self):
        _check(self, "model.rpt.k1", self.k1 >= 0, "must be >= 0")
        _check(self, "model.rpt.b", 0.0 <= self.b <= 1.0, "must be in [0, 1]")
        if self.buckets is not None:
            _check(self, "model.rpt.buckets", self.buckets >= 1, "must be >= 1, or null")
        _check(self, "model.rpt.score_scale", self.score_scale > 0, "must be > 0")
        precomputed = self.retriever == "precomputed"
        _check(
            self,
            "model.rpt.vectors_fn",
            (self.vectors_fn is not None) == precomputed,
            "must name 'package.module:function' exactly when model.rpt.retriever=precomputed",
        )
        if precomputed:
            _check(
                self,
                "model.rpt.idf_path",
                self.idf_path is None,
                "is read only by model.rpt.retriever=bm25; remove it",
            )


# Family subsections of ModelConfig: field name -> section class. A new model family with fields
# of its own adds its section class above and one field to ModelConfig.
FAMILY_SECTIONS: dict[str, type] = {
    "retrieval": RetrievalConfig,
    "landmark": LandmarkConfig,
    "brt": BRTConfig,
    "rpt": RPTConfig,
}


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture: the fields every language model reads, plus its family's subsection."""

    model_type: str = "drt"  # a registered model type (gca_jax/modeling/registry.py)
    vocab_size: int = 50265  # V, including the special ids
    pad_id: int = 50257  # embedding row kept at zero; negative input ids map here
    landmark_id: int = 50264  # the landmark token of the vocabulary (DRT appends it per chunk)
    hidden_size: int = 768  # D
    num_heads: int = 12  # H, for decoder, encoder and GCA
    num_kv_heads: int = 12  # Hkv of decoder self-attention
    mlp_hidden: int = 2048  # F, SwiGLU width
    num_layers: int = 12  # decoder layers in total (DRT: lower layers + every group's layers)
    window: int = 512  # W: keys j with 0 <= i - j <= W are visible; -1 = full causal attention
    rms_norm_eps: float = 1e-5  # decoder, encoder pre-norm, final and landmark norms
    init_std: float = 0.02  # N(0, std) init of every weight matrix and the embedding
    dtype: ComputeDtype = "bfloat16"  # compute dtype of matmuls
    param_dtype: ComputeDtype = "float32"  # storage dtype of parameters
    kernel_backend: BackendOrAuto = "auto"  # attention kernels (kernels/_backend.py)
    remat: RematPolicy = "full"  # per-layer rematerialisation
    loss_block: int = 4096  # tokens per block of the chunked cross-entropy
    retrieval: RetrievalConfig | None = None  # DRT only; filled with defaults when absent
    landmark: LandmarkConfig | None = None  # Landmark Attention only; defaults when absent
    brt: BRTConfig | None = None  # Block-Recurrent Transformer only; defaults when absent
    rpt: RPTConfig | None = None  # RPT (fixed retriever) only; defaults when absent

    def __post_init__(self):
        for key in ("vocab_size", "hidden_size", "num_heads", "num_kv_heads", "mlp_hidden"):
            _check(self, f"model.{key}", getattr(self, key) >= 1, "must be >= 1")
        _check(self, "model.num_layers", self.num_layers >= 1, "must be >= 1")
        _check(self, "model.loss_block", self.loss_block >= 1, "must be >= 1")
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
        for key in ("pad_id", "landmark_id"):
            _check(
                self,
                f"model.{key}",
                0 <= getattr(self, key) < self.vocab_size,
                f"must be in [0, {self.vocab_size})",
            )
        self._resolve_family_sections()
        if self.retrieval is not None:
            upper = sum(self.retrieval.group_layers)
            _check(
                self,
                "model.num_layers",
                self.num_layers > upper,
                f"must exceed the upper layers sum(model.retrieval.group_layers)={upper}: "
                "DRT needs at least one lower layer",
            )
        if self.landmark is not None:
            _check(
                self,
                "model.window",
                self.window == -1,
                "must be -1 for model_type='landmark': its grouped softmax sees the whole causal "
                "past through the landmarks",
            )
        if self.brt is not None:
            _check(
                self,
                "model.window",
                self.window == -1,
                "must be -1 for model_type='brt': its attention span is set by "
                "model.brt.block_len (own block causally plus the previous block), not a window",
            )
            _check(
                self.brt,
                "model.brt.recurrent_layer",
                self.brt.recurrent_layer <= self.num_layers,
                f"must be in [1, model.num_layers={self.num_layers}] (counting from 1)",
            )

    def _resolve_family_sections(self) -> None:
        """Fills the section this model type reads with defaults; rejects the others."""
        for name, cls in FAMILY_SECTIONS.items():
            value = getattr(self, name)
            if self.model_type in cls.model_types:
                if value is None:
                    object.__setattr__(self, name, cls())
            elif value is not None:
                raise ConfigError(
                    f"config error: model.{name} is set, but model_type={self.model_type!r} does "
                    f"not read it (it belongs to model_type {list(cls.model_types)}); remove it"
                )

    @property
    def head_dim(self) -> int:
        """D = D / H."""
        return self.hidden_size // self.num_heads

    @property
    def token_multiple(self) -> int:
        """Raw input lengths must be a multiple of this: S for chunked models, else 1."""
        return self.retrieval.chunk_len if self.retrieval is not None else 1


@dataclasses.dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the tokens come from."""

    corpus_dir: str | None = None  # prepared corpus (train.prepare); null = built-in demo corpus
    eval_corpus_dir: str | None = None  # held-out corpus for periodic eval; null = none
    tokenizer: str = "bytes"  # "bytes", "gpt2" (make gpt2) or a path to a tokenizer.json
    seq_len: int = 16380  # T raw tokens per training sequence (a multiple of the model's S)
    batch_size: int = 4  # global batch of sequences per optimiser step
    align_to_doc_start: bool = False  # start training windows at document starts
    niah_fraction: float = 0.0  # fraction of training samples turned into NIAH tasks
    niah_task: NiahTask = "single"  # NIAH task kind for niah_fraction > 0
    niah_chunk_len: int | None = None  # NIAH alignment unit; null = the model's S (DRT)
    answer_weight: float = 1.0  # loss weight of NIAH answer tokens (1 = plain LM loss)
    num_workers: int = 0  # grain worker processes (0 = in-process)
    seed: int = 404  # data order and task sampling
    task: DataTask = "lm"  # "lm": corpus windows; "summarization": formatted pairs
    summary_dir: str | None = None  # pairs directory, <dir>/<split>.jsonl (--recipe synopsis)
    max_summary_len: int = 128  # summaries are cut to their last this many ids (+ EOT)

    def __post_init__(self):
        _check(self, "data.seq_len", self.seq_len >= 1, "must be >= 1")
        _check(self, "data.max_summary_len", self.max_summary_len >= 1, "must be >= 1")
        if self.task == "summarization":
            _check(
                self,
                "data.summary_dir",
                self.summary_dir is not None,
                "must be set for data.task=summarization: a directory of (document, summary) "
                "pairs, e.g. from `python -m train.prepare --recipe synopsis data/debian --out "
                "data/synopsis`",
            )
            _check(
                self,
                "data.niah_fraction",
                self.niah_fraction == 0,
                "must be 0 for data.task=summarization (NIAH tasks are built into LM windows)",
            )
        _check(self, "data.batch_size", self.batch_size >= 1, "must be >= 1")
        _check(self, "data.niah_fraction", 0.0 <= self.niah_fraction <= 1.0, "must be in [0, 1]")
        if self.niah_chunk_len is not None:
            _check(self, "data.niah_chunk_len", self.niah_chunk_len >= 1, "must be >= 1")
        _check(self, "data.answer_weight", self.answer_weight > 0, "must be > 0")
        _check(self, "data.num_workers", self.num_workers >= 0, "must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimiser, schedule and loop (docs/spec.md §7)."""

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
        s = self.model.token_multiple
        _check(
            self,
            "data.seq_len",
            self.data.seq_len % s == 0,
            f"must be a multiple of model.retrieval.chunk_len={s} (T = C * S)",
        )
        uses_niah = self.data.niah_fraction > 0 or self.eval.passkey_samples > 0
        if uses_niah:
            _check(
                self,
                "data.niah_chunk_len",
                self.niah_chunk_len is not None,
                f"must be set: model_type={self.model.model_type!r} has no chunk length to "
                "align NIAH tasks to (DRT's is 63 or 64)",
            )
            c = self.niah_chunk_len
            _check(self, "data.seq_len", self.data.seq_len % c == 0, f"must be a multiple of {c=}")
        if self.eval.passkey_samples:
            c = self.niah_chunk_len
            _check(
                self,
                "eval.passkey_len",
                self.eval.passkey_len % c == 0 and self.eval.passkey_len % s == 0,
                f"must be a multiple of the NIAH chunk length {c} and the model's {s}",
            )
        if self.data.task == "summarization":
            c, need = self.summary_chunk_len, self.data.max_summary_len + self.summary_chunk_len + 2
            _check(
                self,
                "data.seq_len",
                self.data.seq_len >= need,
                f"must be >= data.max_summary_len + c + 2 = {need} for data.task=summarization: "
                f"room for the summary, its EOT and a prompt of at least one chunk ({c=}) plus "
                "the ':' of the cue; raise data.seq_len or lower data.max_summary_len",
            )
        _check(
            self,
            "data.batch_size",
            self.data.batch_size % self.train.grad_accum == 0,
            f"must be divisible by train.grad_accum={self.train.grad_accum}",
        )

    @property
    def niah_chunk_len(self) -> int | None:
        """Chunk length NIAH tasks align to: ``data.niah_chunk_len``, else the model's S."""
        if self.data.niah_chunk_len is not None:
            return self.data.niah_chunk_len
        return self.model.retrieval.chunk_len if self.model.retrieval is not None else None

    @property
    def summary_chunk_len(self) -> int:
        """The chunk c of the summarization format (prompts are k * c + 1 ids, docs/data.md §6.2).

        The model's S when it has chunks (so generation feeds whole chunks), else
        ``data.niah_chunk_len``, else 64.
        """
        s = self.model.token_multiple
        return s if s > 1 else (self.data.niah_chunk_len or 64)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as written next to checkpoints."""
        return {name: _as_plain(getattr(self, name)) for name in SECTIONS}


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "mesh": MeshConfig,
}

# Keys of the flat model layout (before model families had sections) -> their new place.
_MOVED_KEYS = {
    "model.chunk_len": "model.retrieval.chunk_len",
    "model.chunk_topk": "model.retrieval.top_k",
    "model.gca_null_slot": "model.retrieval.null_slot",
    "model.encoder_layers": "model.retrieval.encoder_layers",
    "model.encoder_rms_norm_eps": "model.retrieval.encoder_rms_norm_eps",
    "model.rope_theta": "model.retrieval.rope_theta",
}


def _as_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return list(obj) if isinstance(obj, tuple) else obj


def _check(obj: Any, key: str, ok: bool, rule: str) -> None:
    """Raises a ConfigError naming ``key``, its value on ``obj`` and the broken ``rule``."""
    if ok:
        return
    parts = key.split(".")
    value, target = None, obj
    if isinstance(obj, Config) and parts[0] in SECTIONS:
        target = getattr(obj, parts[0])
    if len(parts) > 1:
        value = getattr(target, parts[-1], None)
    shown = (
        f"{key}={list(value) if isinstance(value, tuple) else value!r}"
        if value is not None
        else key
    )
    raise ConfigError(f"config error: {shown}: {rule}")


def _closest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _section_type(annotation: Any) -> type | None:
    """The dataclass of a (possibly optional) subsection annotation, else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        return inner[0] if inner else None
    return None


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks ``value`` against a field annotation; converts lists to tuples and ints to floats."""
    section = _section_type(annotation)
    if section is not None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(f"config error: {key} must be a mapping of {section.__name__} keys")
        return _build(key, section, value)
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
            raise ConfigError(
                f"config error: {key}={value!r}: must be one of {list(typing.get_args(annotation))}"
            )
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


def _moved_key_error(key: str, value: Any) -> ConfigError:
    """The error for a key of the flat model layout, naming its new place."""
    if key == "model.decoder_layers":
        hint = "model.num_layers (all decoder layers) and model.retrieval.group_layers"
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            hint = (
                f"model.num_layers: {sum(value)} and, for DRT, model.retrieval.group_layers: "
                f"{list(value[1:])}"
            )
        return ConfigError(f"config error: model.decoder_layers={value!r} moved: write {hint}")
    return ConfigError(
        f"config error: {key} moved to {_MOVED_KEYS[key]} (the model family's own section)"
    )


def _build(prefix: str, cls: type, values: dict[str, Any]) -> Any:
    """Builds the dataclass ``cls`` of section ``prefix`` from a dict of its keys."""
    fields = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}"
        if full in _MOVED_KEYS or full == "model.decoder_layers":
            raise _moved_key_error(full, value)
        if key not in fields:
            raise ConfigError(f"config error: unknown key {full}{_closest(key, list(fields))}")
        kwargs[key] = _coerce(full, value, fields[key])
    return cls(**kwargs)


def _all_keys(prefix: str, cls: type) -> list[str]:
    """Dotted keys of every leaf field of section ``cls`` (subsections expanded)."""
    keys = []
    for name, annotation in _field_types(cls).items():
        section = _section_type(annotation)
        if section is None:
            keys.append(f"{prefix}.{name}")
        else:
            keys.extend(_all_keys(f"{prefix}.{name}", section))
    return keys


def _resolve_override_key(key: str) -> list[str]:
    """Maps ``section.key[.key]`` or a bare, unambiguous ``key`` to its path of names."""
    every = [k for s, cls in SECTIONS.items() for k in _all_keys(s, cls)]
    if "." in key:
        section = key.split(".", 1)[0]
        if section not in SECTIONS:
            raise ConfigError(
                f"config error: unknown section {section!r} in override {key!r}"
                f"{_closest(section, list(SECTIONS))}"
            )
        if key in _MOVED_KEYS or key == "model.decoder_layers":
            return key.split(".")  # _build raises the moved-key error with the value.
        return key.split(".")
    owners = [k for k in every if k.rsplit(".", 1)[1] == key]
    if len(owners) == 1:
        return owners[0].split(".")
    if len(owners) > 1:
        raise ConfigError(
            f"config error: key {key!r} is ambiguous (in {owners}); write e.g. {owners[0]}"
        )
    moved = [k for k in _MOVED_KEYS if k.endswith(f".{key}")]
    if moved or key == "decoder_layers":
        return (moved[0] if moved else "model.decoder_layers").split(".")
    raise ConfigError(f"config error: unknown key {key!r}{_closest(key, every)}")


def parse_overrides(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Parses ``key=value`` strings (values in YAML syntax) into nested section dicts."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config error: override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        path = _resolve_override_key(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"config error: cannot parse value of {key}: {raw!r}") from e
        node = nested
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return nested


def merge_raw(raw: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a YAML layout) with ``updates`` applied key by key, subsections merged."""
    out = dict(raw)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_raw(out[key], value)
        elif isinstance(value, dict) and out.get(key) is None:
            out[key] = merge_raw({}, value)
        else:
            out[key] = value
    return out


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
        sections[name] = _build(name, SECTIONS[name], values)
    return Config(**sections)


def load_config(path: str | pathlib.Path | None, overrides: list[str] = ()) -> Config:
    """Loads a YAML config file and applies ``key=value`` overrides.

    Args:
      path: YAML file, or None for the defaults.
      overrides: strings like ``model.window=256``, ``model.retrieval.top_k=4`` or ``lr=1e-3``.

    Returns:
      The validated, frozen Config.

    Raises:
      ConfigError: an empty file, an unknown key, a wrong type or a broken rule; the message
        names the key.
      FileNotFoundError: the YAML file does not exist.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text())
        if raw is None:  # An empty file would silently mean the full default run.
            raise ConfigError(
                f"config error: {path} is empty (or only comments); give at least the model "
                "section, e.g. copy configs/tiny.yaml"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"config error: {path} must hold a mapping of sections")
    return config_from_dict(merge_raw(raw, parse_overrides(list(overrides))))
