"""Streaming evaluation of the Block-Recurrent Transformer, block by block (docs/inference.md).

The model's carry (the recurrent state and every layer's previous-block K/V, ``BRTCarry``) is all
it needs of the past, so a sequence of any length runs as one jitted ``block_step`` per block of
L = ``brt.block_len`` tokens, with constant device memory. Each step also accumulates the block's
next-token CE on the device; the logits of requested positions are formed only for the blocks
that hold them. The input is right-padded with padding ids to a multiple of L, exactly as the
model's full forward pads it, so both give the same numbers.

``segment_chunks`` of the engine protocol does not apply (the unit of work is the model's block)
and is ignored. There is no memory that grows with the length, so ``offload`` has nothing to move
and is refused, as the sliding-window LM's engine refuses it.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gca_jax.inference.engine import PrefillOutput, query_positions
from gca_jax.modeling import PREFILL, require
from gca_jax.modeling.chunking import IGNORE
from gca_jax.modeling.loss import blocked_cross_entropy, tied_logits

# Blocks between host syncs: the CE sums move to float64 there (float32 sums over millions of
# tokens would lose digits) and the queue of dispatched steps stays bounded.
_FLUSH_BLOCKS = 256


def _block(graphdef, params, carry, tokens_BxL, targets_BxL, totals_B, counts_B, *, with_ce):
    """One block: carry and CE sums in, (final-normed states, carry, CE sums) out."""
    model = nnx.merge(graphdef, params)
    h_BxLxD, carry = model.block_step(carry, model.embed(tokens_BxL))
    if not with_ce:
        return h_BxLxD, carry, totals_B, counts_B
    ce = functools.partial(
        blocked_cross_entropy, table_VxD=model.embed.table[...], block=model.cfg.loss_block
    )
    sums_B, n_B = jax.vmap(lambda h, t: ce(h, targets_N=t))(h_BxLxD, targets_BxL)
    return h_BxLxD, carry, totals_B + sums_B, counts_B + n_B


def _logits(graphdef, params, h_BxLxD, q_BxQ):
    model = nnx.merge(graphdef, params)
    h_BxQxD = jnp.take_along_axis(h_BxLxD, q_BxQ[:, :, None], axis=1)
    return tied_logits(h_BxQxD, model.embed.table[...])


def _initial(graphdef, params, batch: int):
    return nnx.merge(graphdef, params).initial_carry(batch)


class BRTEngine:
    """Block-by-block prefill of a ``BlockRecurrentLM`` (the engine protocol's ``prefill``).

    Args:
      model: a ``BlockRecurrentLM``.
      segment_chunks: ignored (the model's block is the unit; see the module docstring).
      offload: must be False (device memory is constant at any length).

    Raises:
      MissingCapabilityError: the model does not support ``prefill``.
      ValueError: ``offload``.
    """

    def __init__(self, model: nnx.Module, *, segment_chunks: int = 256, offload: bool = False):
        self.cfg = model.cfg
        require(self.cfg, PREFILL)
        if offload:
            raise ValueError(
                "--offload: the Block-Recurrent Transformer carries only its state and the "
                "previous block's keys/values, so its memory is already constant; there is "
                "nothing to offload"
            )
        del segment_chunks  # The unit of work is the model's block.
        self.block_len = self.cfg.brt.block_len
        self.graphdef, self.params = nnx.split(model)
        bind = functools.partial
        self._block = jax.jit(
            bind(_block, self.graphdef), donate_argnums=(1, 4, 5), static_argnames=("with_ce",)
        )
        self._logits = jax.jit(bind(_logits, self.graphdef))
        self._initial = jax.jit(bind(_initial, self.graphdef), static_argnums=(1,))

    def prefill(
        self,
        tokens_BxT,
        *,
        logits_at=None,
        with_ce: bool = False,
        progress: Callable[[int], None] | None = None,
        **unused,
    ) -> PrefillOutput:
        """Runs ``tokens_BxT`` block by block from the initial state.

        Args:
          tokens_BxT: int token ids (B, T), T >= 1; negative ids are padding (never a target).
          logits_at: raw positions (Q,) or (B, Q) whose next-token logits to return.
          with_ce: also return the next-token CE sums and counts per row.
          progress: called with the number of raw tokens after each block.
          **unused: other engines' options; any that is set is an error.

        Returns:
          A ``PrefillOutput`` (no carry, no retrievals, pad 0).

        Raises:
          ValueError: empty or non-2-D input, positions out of range, or an option this
            engine lacks (``carry``, ``keep_state``, ``record``, ...).
        """
        given = sorted(k for k, v in unused.items() if v not in (None, False))
        if given:
            raise ValueError(
                f"{given}: not supported by the BRT streaming engine (it scores from the initial "
                "state: logits_at, with_ce and progress only)"
            )
        tokens = np.asarray(tokens_BxT)
        if tokens.ndim != 2 or tokens.shape[1] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty (B, T) int array, got {tokens.shape}")
        b, t = tokens.shape
        queries = None if logits_at is None else query_positions(logits_at, b, t)
        length = self.block_len
        pad = -t % length
        targets = np.concatenate([tokens[:, 1:], np.full((b, 1 + pad), IGNORE)], axis=1)
        targets = np.where(targets < 0, IGNORE, targets).astype(np.int32)
        tokens = np.pad(tokens.astype(np.int32), ((0, 0), (0, pad)), constant_values=-1)
        logits = None
        if queries is not None:
            logits = np.zeros(queries.shape + (self.cfg.vocab_size,), np.float32)
        carry = self._initial(self.params, b)
        ce_sum, ce_count = np.zeros((b,), np.float64), np.zeros((b,), np.int64)
        totals, counts = jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32)
        for i, start in enumerate(range(0, t + pad, length)):
            if i and i % _FLUSH_BLOCKS == 0:  # float64 on the host; bounds the dispatch queue
                ce_sum += np.asarray(totals, np.float64)
                ce_count += np.asarray(counts, np.int64)
                totals, counts = jnp.zeros_like(totals), jnp.zeros_like(counts)
            stop = start + length
            h, carry, totals, counts = self._block(
                self.params,
                carry,
                jnp.asarray(tokens[:, start:stop]),
                jnp.asarray(targets[:, start:stop]),
                totals,
                counts,
                with_ce=with_ce,
            )
            if queries is not None:
                in_block = (queries >= start) & (queries < stop)
                if in_block.any():
                    q = np.clip(queries - start, 0, length - 1)
                    block_logits = np.asarray(self._logits(self.params, h, jnp.asarray(q)))
                    logits[in_block] = block_logits[in_block]
            if progress is not None:
                progress(b * (min(stop, t) - start))
        ce_sum += np.asarray(totals, np.float64)
        ce_count += np.asarray(counts, np.int64)
        return PrefillOutput(
            logits=logits,
            ce_sum=ce_sum if with_ce else None,
            ce_count=ce_count if with_ce else None,
            carry=None,
            retrievals=None,
            pad=0,
        )
