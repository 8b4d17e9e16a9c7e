"""Tied-head cross-entropy computed in token blocks, so (tokens, V) logits never exist at once."""

import functools

import jax
import jax.numpy as jnp

from gca_jax.modeling.chunking import IGNORE, next_token_targets
from gca_jax.modeling.layers import mixed_matmul

# The head's vocabulary axis is padded to a multiple of this inside the loss: GPT-2's V = 50,265
# is odd, which forces cuBLAS onto its slow unaligned kernels for the three head matmuls.
VOCAB_ALIGN = 128


def tied_logits(h_xD: jax.Array, table_VxD: jax.Array) -> jax.Array:
    """H @ E^T in the compute dtype of h with float32 accumulation and output."""
    return mixed_matmul(h_xD, table_VxD, h_xD.dtype, jnp.float32, w_transposed=True)


def blocked_cross_entropy(
    h_NxD: jax.Array,
    table_VxD: jax.Array,
    targets_N: jax.Array,
    *,
    block: int,
    weights_N: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sum of next-token CE over targets != IGNORE (times ``weights_N`` if given), and their count.

    Blocks of ``block`` tokens go through a rematerialised scan: peak memory is block * V floats
    instead of N * V (at the paper's shape N * V * 4 bytes would be 13 GB).
    """
    n, d = h_NxD.shape
    block = min(block, n)
    pad = (-n) % block
    h = jnp.pad(h_NxD, ((0, pad), (0, 0))).reshape(-1, block, d)
    tgt = jnp.pad(targets_N, (0, pad), constant_values=IGNORE).reshape(-1, block)
    w = jnp.ones((n,), jnp.float32) if weights_N is None else weights_N.astype(jnp.float32)
    w = jnp.pad(w, (0, pad)).reshape(-1, block)
    vocab = table_VxD.shape[0]
    table_pad = jnp.pad(table_VxD, ((0, (-vocab) % VOCAB_ALIGN), (0, 0)))  # zero rows
    real_V = jnp.arange(table_pad.shape[0]) < vocab

    @jax.checkpoint
    def body(total, xs):
        h_blk, tgt_blk, w_blk = xs
        logits = tied_logits(h_blk, table_pad)
        # The mask feeds only the reductions (so it fuses into them); targets are real columns.
        lse = jax.nn.logsumexp(jnp.where(real_V, logits, -jnp.inf), axis=-1)
        valid = tgt_blk != IGNORE
        picked = jnp.take_along_axis(logits, jnp.where(valid, tgt_blk, 0)[:, None], axis=-1)[:, 0]
        return total + jnp.sum(jnp.where(valid, (lse - picked) * w_blk, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (h, tgt, w))
    return total, jnp.sum(targets_N != IGNORE)


def next_token_loss(
    h_BxTxD: jax.Array,
    table_VxD: jax.Array,
    tokens_BxT: jax.Array,
    *,
    block: int,
    weights_BxT: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Next-token CE at raw-token positions, and {"loss", "tokens", "weight"} for metrics.

    ``weights_BxT[b, t]`` weighs the prediction *of* token t (so it shifts with the targets);
    the loss is the weighted mean, normalised by "weight" (the sum of the weights of predicted
    tokens, = "tokens" without weights).

    Blocks run along each sequence (``block // B`` positions of every sequence at once), never
    across sequences: the batch axis stays whole, so a batch sharded over devices stays sharded
    (flattening B x T into blocks made every device gather and compute the whole batch's head).
    """
    b = h_BxTxD.shape[0]
    ce = functools.partial(blocked_cross_entropy, table_VxD=table_VxD, block=max(1, block // b))
    targets_BxT = next_token_targets(tokens_BxT)
    if weights_BxT is None:
        weights_BxT = jnp.ones(tokens_BxT.shape, jnp.float32)
    # Shift like the targets: position t predicts token t + 1 and carries its weight.
    w_BxT = jnp.concatenate([weights_BxT[:, 1:], jnp.zeros_like(weights_BxT[:, :1])], axis=1)
    w_BxT = jnp.where(targets_BxT == IGNORE, 0.0, w_BxT.astype(jnp.float32))
    totals_B, counts_B = jax.vmap(lambda h, t, w: ce(h, targets_N=t, weights_N=w))(
        h_BxTxD, targets_BxT, w_BxT
    )
    weight = jnp.sum(w_BxT)
    count = jnp.sum(counts_B)
    loss = jnp.sum(totals_B) / jnp.maximum(weight, 1e-6)
    return loss, {"loss": loss, "tokens": count, "weight": weight}
