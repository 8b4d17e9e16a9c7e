"""Data layer: tokenizers, corpus preparation, grain pipelines, NIAH and summarization tasks.

This package re-exports the API the trainer and evaluator use. Source formats live in
`gca_jax.data.sources`, one module each behind one registry; tensorflow-datasets is only imported by
`gca_jax.data.sources.tfds` when a tfds source is asked for.
"""

from gca_jax.data.manifest import check_tokenizer_matches, read_manifest
from gca_jax.data.mix import make_niah_mix_dataset
from gca_jax.data.niah import NiahSource, NiahTemplates, is_hit, make_niah_dataset, make_niah_sample
from gca_jax.data.pipeline import TokenStream, make_eval_dataset, make_train_dataset
from gca_jax.data.prepare import prepare_builtin_corpus, prepare_corpus
from gca_jax.data.sources.builtin import builtin_documents
from gca_jax.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "HFTokenizer",
    "NiahSource",
    "NiahTemplates",
    "TokenStream",
    "Tokenizer",
    "builtin_documents",
    "check_tokenizer_matches",
    "is_hit",
    "load_tokenizer",
    "make_eval_dataset",
    "make_niah_dataset",
    "make_niah_mix_dataset",
    "make_niah_sample",
    "make_train_dataset",
    "prepare_builtin_corpus",
    "prepare_corpus",
    "read_manifest",
]
