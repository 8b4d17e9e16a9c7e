"""Landmark insertion and next-token targets on the chunked layout (docs/spec.md §1.3, §1.12)."""

import jax
import jax.numpy as jnp

IGNORE = -1  # target id that the loss skips


def insert_landmarks(tokens_BxT: jax.Array, *, chunk_len: int, landmark_id: int) -> jax.Array:
    """(B, T) raw tokens -> (B, C, P) ids with the landmark at slot S of every chunk.

    Example, S = 3: [a b c d e f] -> [[a b c L] [d e f L]].
    """
    b, t = tokens_BxT.shape
    c = t // chunk_len
    ids_BxCxS = tokens_BxT.reshape(b, c, chunk_len)
    lmk_BxCx1 = jnp.full((b, c, 1), landmark_id, tokens_BxT.dtype)
    return jnp.concatenate([ids_BxCxS, lmk_BxCx1], axis=-1)


def next_token_targets(tokens_BxT: jax.Array) -> jax.Array:
    """tgt[i] = tokens[i + 1]; the last position and negative (padding) ids are IGNORE.

    Targets live on raw positions, so chunk c's last raw token predicts chunk c+1's first one
    and landmark slots are never predicted.
    """
    shifted = jnp.concatenate(
        [tokens_BxT[:, 1:], jnp.full((tokens_BxT.shape[0], 1), IGNORE, tokens_BxT.dtype)], axis=1
    )
    return jnp.where(shifted < 0, IGNORE, shifted)
