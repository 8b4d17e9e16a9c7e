"""Tied-head cross-entropy computed in token blocks, so (tokens, V) logits never exist at once."""

import functools

import jax
import jax.numpy as jnp

from gca_jax.modeling.chunking import IGNORE, next_token_targets


def tied_logits(h_xD: jax.Array, table_VxD: jax.Array) -> jax.Array:
    """H @ E^T in the compute dtype of h with float32 accumulation and output."""
    return jnp.einsum(
        "...D,VD->...V", h_xD, table_VxD.astype(h_xD.dtype), preferred_element_type=jnp.float32
    )


def blocked_cross_entropy(
    h_NxD: jax.Array, table_VxD: jax.Array, targets_N: jax.Array, *, block: int
) -> tuple[jax.Array, jax.Array]:
    """Sum of next-token CE over targets != IGNORE, and their count.

    Blocks of ``block`` tokens go through a rematerialised scan: peak memory is block * V floats
    instead of N * V (at the paper's shape N * V * 4 bytes would be 13 GB).
    """
    n, d = h_NxD.shape
    block = min(block, n)
    pad = (-n) % block
    h = jnp.pad(h_NxD, ((0, pad), (0, 0))).reshape(-1, block, d)
    tgt = jnp.pad(targets_N, (0, pad), constant_values=IGNORE).reshape(-1, block)

    @jax.checkpoint
    def body(total, xs):
        h_blk, tgt_blk = xs
        logits = tied_logits(h_blk, table_VxD)
        lse = jax.nn.logsumexp(logits, axis=-1)
        valid = tgt_blk != IGNORE
        picked = jnp.take_along_axis(logits, jnp.where(valid, tgt_blk, 0)[:, None], axis=-1)[:, 0]
        return total + jnp.sum(jnp.where(valid, lse - picked, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (h, tgt))
    return total, jnp.sum(targets_N != IGNORE)


def next_token_loss(
    h_BxTxD: jax.Array, table_VxD: jax.Array, tokens_BxT: jax.Array, *, block: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean next-token CE at raw-token positions, and {"loss", "tokens"} for metrics.

    Blocks run along each sequence (``block // B`` positions of every sequence at once), never
    across sequences: the batch axis stays whole, so a batch sharded over devices stays sharded
    (flattening B x T into blocks made every device gather and compute the whole batch's head).
    """
    b = h_BxTxD.shape[0]
    ce = functools.partial(blocked_cross_entropy, table_VxD=table_VxD, block=max(1, block // b))
    totals_B, counts_B = jax.vmap(lambda h, t: ce(h, targets_N=t))(
        h_BxTxD, next_token_targets(tokens_BxT)
    )
    count = jnp.sum(counts_B)
    loss = jnp.sum(totals_B) / jnp.maximum(count, 1)
    return loss, {"loss": loss, "tokens": count}
