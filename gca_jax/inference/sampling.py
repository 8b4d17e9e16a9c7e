"""Next-token sampling, alone or fused with the decode steps into one jitted span.

``sampled_steps`` runs feed -> sample n times inside one ``lax.scan``: a decoder that can feed
n tokens without a host step in between (the DRT decoder within a chunk, the sliding-window one
always) generates them in one call, with no per-token dispatch or host round trip.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("top_k", "top_p"))
def sample_next(
    logits_BxV: jax.Array, key: jax.Array, *, top_k: int, temperature: float, top_p: float = 1.0
):
    """Next token per row at ``temperature``.

    ``top_p`` = 1: argmax for ``top_k`` <= 1, else sampling among the ``top_k`` most likely.
    ``top_p`` < 1 (nucleus sampling): among the ``top_k`` most likely (all V for ``top_k`` <= 1),
    sampling from the smallest most-likely set whose probability reaches ``top_p`` (the most
    likely token always stays in).
    """
    if top_k <= 1 and top_p >= 1.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    k = top_k if top_k > 1 else logits_BxV.shape[-1]
    vals_BxK, idx_BxK = jax.lax.top_k(logits_BxV / temperature, k)  # sorted, largest first
    if top_p < 1.0:
        probs_BxK = jax.nn.softmax(vals_BxK, axis=-1)
        before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK  # mass of the likelier ones
        vals_BxK = jnp.where(before_BxK < top_p, vals_BxK, -jnp.inf)
    pick_B = jax.random.categorical(key, vals_BxK, axis=-1)
    return jnp.take_along_axis(idx_BxK, pick_B.reshape(-1, 1), axis=1)[:, 0].astype(jnp.int32)


def sampled_steps(
    step: Callable,
    state,
    ids_B: jax.Array,
    key: jax.Array,
    temperature,
    *,
    n: int,
    top_k: int,
    top_p: float,
):
    """Feeds ``ids_B``, samples the next token, feeds it, ... n times (call it inside a jit).

    ``step(state, ids_B) -> (logits_BxV, state)`` is one decode step. The key is split once per
    sampled token, as ``generate``'s token-by-token loop does, so both give the same tokens.

    Returns:
      ((B, n) int32 sampled ids, the state after n steps, the key after n splits).
    """

    def body(carry, _):
        state, ids_B, key = carry
        logits_BxV, state = step(state, ids_B)
        key, sub = jax.random.split(key)
        ids_B = sample_next(logits_BxV, sub, top_k=top_k, temperature=temperature, top_p=top_p)
        return (state, ids_B, key), ids_B

    (state, _, key), ids_NxB = jax.lax.scan(body, (state, ids_B, key), length=n)
    return ids_NxB.T, state, key
