"""The train and eval steps: pure functions of (state, batch), jitted once by the loop.

One step: split the batch into ``grad_accum`` micro-batches, sum token-weighted gradients (so
accumulation equals the big batch exactly, padding included; an optional ``weights`` (B, T)
entry weighs tokens in the loss, see ``next_token_loss``), clip, Adam, decoupled weight decay,
lr from the step counter. A step whose loss, gradient norm, new parameters or new optimiser
state is not finite is *skipped*: the parameters and optimiser state are kept, ``skipped`` counts
it and the step counter still advances (as the original's GradScaler does, docs/spec.md §7).
Checking the new state, not only the loss, means the step that would produce a NaN weight (e.g.
from a damaged Adam moment) is the one skipped, so a non-finite state is never kept or saved.

The Gumbel key of step n is ``fold_in(key(train.seed), n)`` (then folded with the micro-batch
index), so a resumed run draws exactly the noise of an uninterrupted one.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from gca_jax.config import TrainConfig
from gca_jax.training.optimizer import apply_lr
from gca_jax.training.state import ModelDef, TrainState

Metrics = dict[str, jax.Array]
_COUNTS = ("tokens", "weight")  # loss aux entries that are summed, not averaged
_INPUTS = ("tokens", "weights")  # batch entries the loss reads


def step_key(seed: int, step: jax.Array) -> jax.Array:
    """Gumbel key of one optimiser step."""
    return jax.random.fold_in(jax.random.key(seed), step)


def _all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (bool scalar)."""
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.stack(flags).all() if flags else jnp.array(True)


def _split_micro(tokens_BxT: jax.Array, accum: int) -> jax.Array:
    """(B, T) -> (accum, B / accum, T), micro-batch i = rows i, i + accum, ...

    The strided split keeps each device's rows on that device when B is sharded and
    (B / devices) % accum == 0.
    """
    b, t = tokens_BxT.shape
    return tokens_BxT.reshape(b // accum, accum, t).swapaxes(0, 1)


def make_train_step(
    mdef: ModelDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    cfg: TrainConfig,
) -> Callable[[TrainState, dict], tuple[TrainState, Metrics]]:
    """Builds ``train_step(state, batch) -> (state, metrics)`` (not jitted)."""

    def loss_fn(params, inputs, key):
        loss, aux = mdef.merge(params).loss(
            inputs["tokens"], gumbel_key=key, weights_BxT=inputs.get("weights")
        )
        count = aux["weight"].astype(jnp.float32)  # = the token count without weights
        return loss * count, (count, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, Metrics]:
        key = step_key(cfg.seed, state.step)
        micro = {k: _split_micro(v, cfg.grad_accum) for k, v in batch.items() if k in _INPUTS}

        def body(carry, xs):
            i, inputs = xs
            (total, (count, aux)), grads = grad_fn(state.params, inputs, jax.random.fold_in(key, i))
            stats = {k: v.astype(jnp.float32) * count for k, v in aux.items() if k not in _COUNTS}
            out = (grads, total, count, aux["tokens"].astype(jnp.float32), stats)
            return jax.tree.map(jnp.add, carry, out), None

        first = jax.tree.map(lambda x: x[0], micro)
        _, (_, aux_shape) = jax.eval_shape(loss_fn, state.params, first, key)
        zero = jnp.zeros((), jnp.float32)
        carry = (
            jax.tree.map(jnp.zeros_like, state.params),
            zero,
            zero,
            zero,
            {k: zero for k in aux_shape if k not in _COUNTS},
        )
        (grads, total, count, tokens, stats), _ = jax.lax.scan(
            body, carry, (jnp.arange(cfg.grad_accum), micro)
        )
        inv = 1.0 / jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g * inv, grads)
        loss = total * inv
        grad_norm = optax.tree.norm(grads)
        lr = schedule(state.step)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, apply_lr(updates, lr))
        is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite((params, opt_state))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, old)
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            skipped=state.skipped + (~is_finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": tokens,
            "is_finite": is_finite,
            "skipped": new_state.skipped,
            **{k: v * inv for k, v in stats.items() if k != "loss"},
        }
        return new_state, metrics

    return train_step


def make_eval_step(mdef: ModelDef) -> Callable[[dict, dict], Metrics]:
    """Builds ``eval_step(params, batch) -> {"loss_sum", "tokens"}`` (plain top-k retrieval)."""

    def eval_step(params: dict, batch: dict) -> Metrics:
        loss, aux = mdef.merge(params).loss(batch["tokens"])
        count = aux["tokens"].astype(jnp.float32)
        return {"loss_sum": loss * count, "tokens": count}

    return eval_step
