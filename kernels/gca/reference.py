"""Pure-jnp reference for Grouped Cross Attention (GCA): the ground truth for every backend.

Contract (docs/architecture.md, "Contracts"; docs/spec.md §2.2):

    out[b, c] = sum_k w[b, c, k] * softmax_j(q[b, c] @ keys[b, idx[b, c, k]].T * scale)
                                  @ values[b, idx[b, c, k]]

One softmax per retrieved chunk over its S (= P' = 64) slots, with no masking inside a chunk;
scores, softmax and the weighted sum are float32. GQA: query head h reads kv head h // (H // Hkv)
(``repeat_interleave`` semantics, docs/spec.md §2.1).

This module is written for clarity and is differentiated by plain autodiff: it never defines a
custom VJP, so its gradient is the oracle for the Pallas backward. It does gather the retrieved
chunks, but one retrieved slot k at a time inside a rematerialised ``lax.scan``, so at most one
(B, C, S, Hkv, d) gathered slab and one (B, C, H, P, S) probability tensor are live at once,
forward or backward.
"""

import jax
import jax.numpy as jnp


def _chunk_attention(
    q_BxCxPxHkvxGxd: jax.Array, k_BxCxSxHkvxd: jax.Array, v_BxCxSxHkvxd: jax.Array, scale: float
) -> jax.Array:
    """Softmax attention of every query chunk over one (already gathered) chunk, float32."""
    s_BxCxHkvxGxPxS = jnp.einsum(
        "bcpngd,bcsnd->bcngps", q_BxCxPxHkvxGxd, k_BxCxSxHkvxd, preferred_element_type=jnp.float32
    )
    p_BxCxHkvxGxPxS = jax.nn.softmax(s_BxCxHkvxGxPxS * scale, axis=-1)
    return jnp.einsum(
        "bcngps,bcsnd->bcpngd", p_BxCxHkvxGxPxS, v_BxCxSxHkvxd, preferred_element_type=jnp.float32
    )


def gca_attention_reference(
    q_BxCxPxHxd: jax.Array,
    keys_BxExSxHkvxd: jax.Array,
    values_BxExSxHkvxd: jax.Array,
    idx_BxCxK: jax.Array,
    w_BxCxK: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """GCA of every query chunk over its K retrieved memory chunks.

    Args:
      q_BxCxPxHxd: queries, P rows per chunk.
      keys_BxExSxHkvxd: chunk memory keys, S slots per memory row.
      values_BxExSxHkvxd: chunk memory values.
      idx_BxCxK: int32 memory rows retrieved by each query chunk, in [0, E).
      w_BxCxK: retrieval weights (0 for padding slots).
      scale: softmax scale, usually 1/sqrt(d).

    Returns:
      (B, C, P, H, d) in q's dtype.
    """
    b, c, p, h, d = q_BxCxPxHxd.shape
    hkv = keys_BxExSxHkvxd.shape[3]
    q_BxCxPxHkvxGxd = q_BxCxPxHxd.astype(jnp.float32).reshape(b, c, p, hkv, h // hkv, d)
    keys_f32 = keys_BxExSxHkvxd.astype(jnp.float32)
    values_f32 = values_BxExSxHkvxd.astype(jnp.float32)
    take_rows = jax.vmap(lambda mem_ExSxHkvxd, idx_C: mem_ExSxHkvxd[idx_C])

    @jax.checkpoint
    def one_slot(acc, xs):
        idx_BxC, w_BxC = xs
        o_BxCxPxHkvxGxd = _chunk_attention(
            q_BxCxPxHkvxGxd, take_rows(keys_f32, idx_BxC), take_rows(values_f32, idx_BxC), scale
        )
        return acc + w_BxC[:, :, None, None, None, None] * o_BxCxPxHkvxGxd, None

    acc0 = jnp.zeros(q_BxCxPxHkvxGxd.shape, jnp.float32)
    xs = (jnp.moveaxis(idx_BxCxK, -1, 0), jnp.moveaxis(w_BxCxK.astype(jnp.float32), -1, 0))
    out, _ = jax.lax.scan(one_slot, acc0, xs)
    return out.reshape(b, c, p, h, d).astype(q_BxCxPxHxd.dtype)


def gca_decode_reference(
    q_BxNxHxd: jax.Array,
    keys_BxKxSxHkvxd: jax.Array,
    values_BxKxSxHkvxd: jax.Array,
    w_BxK: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """GCA of N query rows against K already-retrieved chunks (decode step).

    Args:
      q_BxNxHxd: queries of the current (partial) chunk.
      keys_BxKxSxHkvxd: keys of the retrieved chunks.
      values_BxKxSxHkvxd: values of the retrieved chunks.
      w_BxK: retrieval weights.
      scale: softmax scale.

    Returns:
      (B, N, H, d) in q's dtype.
    """
    b, n, h, d = q_BxNxHxd.shape
    hkv = keys_BxKxSxHkvxd.shape[3]
    q_BxNxHkvxGxd = q_BxNxHxd.astype(jnp.float32).reshape(b, n, hkv, h // hkv, d)
    s_BxKxHkvxGxNxS = jnp.einsum(
        "bnhgd,bkshd->bkhgns", q_BxNxHkvxGxd, keys_BxKxSxHkvxd.astype(jnp.float32)
    )
    p_BxKxHkvxGxNxS = jax.nn.softmax(s_BxKxHkvxGxNxS * scale, axis=-1)
    o_BxNxHkvxGxd = jnp.einsum(
        "bkhgns,bkshd,bk->bnhgd",
        p_BxKxHkvxGxNxS,
        values_BxKxSxHkvxd.astype(jnp.float32),
        w_BxK.astype(jnp.float32),
    )
    return o_BxNxHkvxGxd.reshape(b, n, h, d).astype(q_BxNxHxd.dtype)
