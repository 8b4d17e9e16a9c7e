"""Training and evaluation inputs: corpus resolution (built-in demo corpus), grain iterators."""

import functools
import logging
import os

import jax
import numpy as np

from gca_jax.config import Config

logger = logging.getLogger(__name__)


def resolve_corpora(cfg: Config, work_dir: str) -> tuple[str, str | None]:
    """(train corpus dir, eval corpus dir or None).

    With ``data.corpus_dir: null`` the built-in corpus (``gca_jax.data.sources.builtin``) is
    prepared into ``<work_dir>/builtin_corpus/{train,validation}`` (resumable, so a restart
    reuses it) and its validation split is the eval corpus unless ``data.eval_corpus_dir`` is
    set.

    Raises:
      ValueError: a corpus prepared with a different tokenizer than ``data.tokenizer``.
    """
    from gca_jax.data import check_tokenizer_matches, load_tokenizer, prepare_builtin_corpus

    train_dir, eval_dir = cfg.data.corpus_dir, cfg.data.eval_corpus_dir
    if cfg.data.task == "summarization":  # Trains on data.summary_dir's pairs, no corpus.
        train_dir = None
    elif train_dir is None:
        root = os.path.join(work_dir, "builtin_corpus")
        train_dir = os.path.join(root, "train")
        prepare_builtin_corpus(train_dir, cfg.data.tokenizer, split="train")
        if eval_dir is None:
            eval_dir = os.path.join(root, "validation")
            prepare_builtin_corpus(eval_dir, cfg.data.tokenizer, split="validation")
    identity = load_tokenizer(cfg.data.tokenizer).identity
    for corpus in (train_dir, eval_dir):
        if corpus is not None:
            check_tokenizer_matches(corpus, identity)
    return train_dir, eval_dir


def local_batch_size(global_batch: int) -> int:
    """This process's share of the global batch.

    Raises:
      ValueError: the batch does not split evenly over processes.
    """
    n = jax.process_count()
    if global_batch % n:
        raise ValueError(f"data.batch_size={global_batch} must be divisible by {n} processes")
    return global_batch // n


def _niah_inputs(batch: dict, answer_weight: float) -> dict:
    """Model inputs of a NIAH mix (or summarization) batch.

    Tokens outside ``loss_mask`` become -1: padding the model neither predicts nor reads. With
    ``answer_weight != 1`` a ``weights`` entry weighs the answer tokens' predictions by it (and
    every other token by 1).
    """
    out = {"tokens": np.where(batch["loss_mask"], batch["tokens"], -1).astype(np.int32)}
    if answer_weight != 1.0:
        out["weights"] = np.where(batch["answer_mask"], answer_weight, 1.0).astype(np.float32)
    return out


def summarization_format(cfg: Config, tokenizer):
    """The summarization format of a run (docs/data.md §6.2).

    T = ``data.seq_len``, ``data.max_summary_len``, c = ``cfg.summary_chunk_len``.
    """
    from gca_jax.data.summarization import SummarizationFormat

    return SummarizationFormat.from_tokenizer(
        tokenizer,
        max_len=cfg.data.seq_len,
        max_sum_len=cfg.data.max_summary_len,
        chunk_size=cfg.summary_chunk_len,
    )


def train_iterator(cfg: Config, corpus_dir: str | None):
    """Checkpointable grain iterator of this process's ``{"tokens": int32 (B_local, T)}``.

    With ``data.niah_fraction > 0`` that fraction of samples are NIAH tasks of
    ``data.niah_task`` built into the training windows (docs/spec.md §6.6); their pad tail is
    masked, and ``data.answer_weight`` weighs their answer tokens in the loss. With
    ``data.task: summarization`` the samples are the formatted train pairs of
    ``data.summary_dir`` (docs/data.md §6.2): pads masked the same way, and
    ``data.answer_weight`` weighs the summary tokens.
    """
    from gca_jax.data import load_tokenizer, make_niah_mix_dataset, make_train_dataset

    d = cfg.data
    common = dict(
        seq_len=d.seq_len,
        batch_size=local_batch_size(d.batch_size),
        seed=d.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=d.num_workers,
    )
    if d.task == "summarization":
        from gca_jax.data import summarization

        tok = load_tokenizer(d.tokenizer)
        del common["seq_len"]
        ds = summarization.make_summarization_train_dataset(
            summarization.read_split(d.summary_dir, "train"),
            tok,
            summarization_format(cfg, tok),
            **common,
        ).map(functools.partial(_niah_inputs, answer_weight=d.answer_weight))
    elif d.niah_fraction > 0:
        ds = make_niah_mix_dataset(
            corpus_dir,
            load_tokenizer(d.tokenizer),
            chunk_size=cfg.niah_chunk_len,
            probabilities={"lm": 1.0 - d.niah_fraction, d.niah_task: d.niah_fraction},
            **common,
        ).map(functools.partial(_niah_inputs, answer_weight=d.answer_weight))
    else:
        ds = make_train_dataset(corpus_dir, align_to_doc_start=d.align_to_doc_start, **common)
    return iter(ds)


def eval_batches(cfg: Config, corpus_dir: str):
    """The first ``eval.batches`` full batches of consecutive eval windows (local slices)."""
    from gca_jax.data import make_eval_dataset

    local = local_batch_size(cfg.data.batch_size)
    return make_eval_dataset(
        corpus_dir,
        seq_len=cfg.data.seq_len,
        batch_size=local,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        max_windows=cfg.eval.batches * cfg.data.batch_size,
        drop_remainder=True,
    )
