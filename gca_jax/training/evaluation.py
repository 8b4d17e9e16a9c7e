"""Periodic evaluation during training: validation perplexity and passkey accuracy.

Both run the model with plain top-k retrieval (no Gumbel noise). The passkey evaluation builds
single-passkey NIAH samples (docs/spec.md §6) from the eval corpus with ``gca_jax.data.niah`` and
scores them by the argmax at the answer position (docs/spec.md §6.5).
"""

import logging
import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gca_jax import sharding as shard_lib
from gca_jax.config import Config
from gca_jax.inference.evaluation import passkey_query, passkey_record
from gca_jax.modeling import SCORE, require
from gca_jax.training.state import ModelDef
from gca_jax.training.step import make_eval_step

logger = logging.getLogger(__name__)


class Evaluator:
    """Jitted perplexity and passkey evaluation over fixed eval sets.

    Args:
      cfg: the run config (data.seq_len, eval.*).
      mdef: the model definition.
      param_shardings: shardings of the parameter tree.
      mesh: the device mesh.
      corpus_dir: the eval corpus, or None to skip evaluation.
    """

    def __init__(self, cfg: Config, mdef: ModelDef, param_shardings, mesh, corpus_dir: str | None):
        self.cfg, self.mdef, self.mesh, self.corpus_dir = cfg, mdef, mesh, corpus_dir
        if corpus_dir is not None and (cfg.eval.batches or cfg.eval.passkey_samples):
            require(cfg.model, SCORE)
        batch_sh = shard_lib.batch_sharding(mesh)
        self._eval_step = jax.jit(
            make_eval_step(mdef), in_shardings=(param_shardings, {"tokens": batch_sh})
        )
        replicated = NamedSharding(mesh, P())
        self._logits = jax.jit(
            lambda params, tokens, pos: _logits_at(mdef, params, tokens, pos),
            in_shardings=(param_shardings, replicated, replicated),
        )

    def perplexity(self, params) -> dict[str, float]:
        """{"loss", "ppl", "tokens"} over the first ``eval.batches`` batches of the eval corpus."""
        from gca_jax.training.inputs import eval_batches

        if self.corpus_dir is None or self.cfg.eval.batches == 0:
            return {}
        ds = eval_batches(self.cfg, self.corpus_dir)
        total = count = 0.0
        with jax.set_mesh(self.mesh):
            for i in range(len(ds)):
                out = self._eval_step(params, shard_lib.global_batch(ds[i], self.mesh))
                total += float(out["loss_sum"])
                count += float(out["tokens"])
        if count == 0:
            logger.warning("eval corpus %s is shorter than one batch: no eval", self.corpus_dir)
            return {}
        loss = total / count
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}

    def passkey(self, params) -> dict[str, float]:
        """{"passkey_acc"} over ``eval.passkey_samples`` single-passkey samples, or {}."""
        n = self.cfg.eval.passkey_samples
        if self.corpus_dir is None or n == 0:
            return {}
        from gca_jax.data import load_tokenizer
        from gca_jax.data.niah import NiahSource

        tok = load_tokenizer(self.cfg.data.tokenizer)
        source = NiahSource(
            self.corpus_dir,
            tok,
            task="single",
            seq_len=self.cfg.eval.passkey_len,
            chunk_size=self.cfg.niah_chunk_len,
            seed=self.cfg.data.seed,
            num_samples=n,
        )
        hits = 0
        with jax.set_mesh(self.mesh):
            for i in range(n):
                sample = source[i]
                tokens, pos, target = passkey_query(sample, neutral_id=tok.pad_id)
                pred = int(self._logits(params, jnp.asarray(tokens[None]), jnp.int32(pos)))
                hits += int(passkey_record(sample, pred, target)["hit"])
        return {"passkey_acc": hits / n}

    def __call__(self, params) -> dict[str, float]:
        """Perplexity and passkey metrics (empty dict when nothing is configured)."""
        return {**self.perplexity(params), **self.passkey(params)}


def _logits_at(mdef: ModelDef, params, tokens_1xT, pos) -> jax.Array:
    """Argmax token predicted at position ``pos`` (the next-token prediction for pos + 1)."""
    logits_1xTxV = mdef.merge(params).logits(tokens_1xT)
    return jnp.argmax(jax.lax.dynamic_index_in_dim(logits_1xTxV[0], pos, keepdims=False))


def best_value(metrics: dict[str, float]) -> float | None:
    """The quantity the best checkpoint minimises: eval loss, else minus passkey accuracy."""
    if "loss" in metrics:
        return metrics["loss"]
    if "passkey_acc" in metrics:
        return -metrics["passkey_acc"]
    return None


__all__ = ["Evaluator", "best_value"]
