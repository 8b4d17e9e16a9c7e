"""Pure-jnp reference for grouped-softmax landmark attention (the spec; docs/architecture.md).

Layout: the sequence is C blocks of P = ``block_len`` positions, aligned to its start; the last
slot of each block (position ``c * P + P - 1``) is that block's landmark. For query i in block
c(i), with ``s_it = scale * q_i . k_t`` and causal ``t <= i`` (Landmark Attention, Mohtashami &
Jaggi 2023):

- L_i = the non-landmark keys of block c(i) up to i (the own landmark is masked, also when i is
  that landmark);
- Z_i = sum over t in L_i of exp(s_it) + sum over past blocks j < c(i) of exp(s_i,l_j), with l_j
  block j's landmark;
- p_it = exp(s_it) / Z_i for t in L_i; for t a non-landmark key of a past block j,
  p_it = (exp(s_i,l_j) / Z_i) * exp(s_it) / (sum over non-landmark u of block j of exp(s_iu));
- landmarks carry no value weight: o_i = sum_t p_it v_t.

So the top level is one softmax over the own block's visible keys and the past blocks'
landmark logits, and each past block contributes its landmark's share times an in-block softmax
over its other P - 1 keys.

The computation is a ``lax.map`` over query blocks of one landmark block each, rematerialised,
against the keys grouped as (C, P): memory is O(P * T) per step, never a (T, T) array, and
autodiff stores only the inputs. Softmaxes and accumulations are float32; the output has q's
dtype. No custom VJP: its autodiff gradient is the oracle for the Pallas backward.
"""

import jax
import jax.numpy as jnp


def _one_block(q_BxPxKxGxd, c, k_BxCxPxKxd, v_BxCxPxKxd, scale):
    """Output of query block c (B, P, Hkv, G, d) against key blocks 0..c (K = Hkv)."""
    num_blocks, p = k_BxCxPxKxd.shape[1], k_BxCxPxKxd.shape[2]
    s_BxKxGxQxCxP = (
        jnp.einsum(
            "bqkgd,bcpkd->bkgqcp", q_BxPxKxGxd, k_BxCxPxKxd, preferred_element_type=jnp.float32
        )
        * scale
    )
    slot_P = jnp.arange(p)
    block_C = jnp.arange(num_blocks)
    is_lmk_P = slot_P == p - 1
    # Past blocks j < c: the landmark logit (top level) and a softmax over the other P - 1 keys.
    lmk_BxKxGxQxC = jnp.where(block_C < c, s_BxKxGxQxCxP[..., p - 1], -jnp.inf)
    inner_s = jnp.where(is_lmk_P, -jnp.inf, s_BxKxGxQxCxP)
    inner_p_BxKxGxQxCxP = jax.nn.softmax(inner_s, axis=-1)
    inner_o_BxKxGxQxCxd = jnp.einsum(
        "bkgqcp,bcpkd->bkgqcd", inner_p_BxKxGxQxCxP, v_BxCxPxKxd.astype(jnp.float32)
    )
    # The own block c: non-landmark keys up to the query (row q sees slots u <= q, u < P - 1).
    own_s_BxKxGxQxP = jax.lax.dynamic_index_in_dim(s_BxKxGxQxCxP, c, axis=4, keepdims=False)
    own_visible_QxP = (slot_P[None, :] <= slot_P[:, None]) & ~is_lmk_P[None, :]
    own_s_BxKxGxQxP = jnp.where(own_visible_QxP, own_s_BxKxGxQxP, -jnp.inf)
    top_p = jax.nn.softmax(jnp.concatenate([lmk_BxKxGxQxC, own_s_BxKxGxQxP], axis=-1), axis=-1)
    lmk_p_BxKxGxQxC, own_p_BxKxGxQxP = top_p[..., :num_blocks], top_p[..., num_blocks:]
    own_v_BxPxKxd = jax.lax.dynamic_index_in_dim(v_BxCxPxKxd, c, axis=1, keepdims=False)
    o_BxKxGxQxd = jnp.einsum(
        "bkgqc,bkgqcd->bkgqd", lmk_p_BxKxGxQxC, inner_o_BxKxGxQxCxd
    ) + jnp.einsum("bkgqp,bpkd->bkgqd", own_p_BxKxGxQxP, own_v_BxPxKxd.astype(jnp.float32))
    return jnp.moveaxis(o_BxKxGxQxd, 3, 1)  # (B, Q, K, G, d)


def landmark_attention_reference(
    q_BxTxHxd: jax.Array,
    k_BxTxHkvxd: jax.Array,
    v_BxTxHkvxd: jax.Array,
    *,
    block_len: int,
    scale: float | None = None,
) -> jax.Array:
    """Grouped-softmax landmark attention over blocks of ``block_len`` positions.

    Args:
      q_BxTxHxd: queries (RoPE applied by the caller).
      k_BxTxHkvxd: keys (RoPE applied), ``H % Hkv == 0``; query head h reads kv head
        ``h // (H // Hkv)``. Position ``c * P + P - 1`` of each block is its landmark.
      v_BxTxHkvxd: values.
      block_len: P >= 2, dividing T.
      scale: logit scale; defaults to ``1 / sqrt(d)``.

    Returns:
      (B, T, H, d) in q's dtype.
    """
    B, T, H, d = q_BxTxHxd.shape
    Hkv = k_BxTxHkvxd.shape[2]
    G, P = H // Hkv, block_len
    C = T // P
    scale = d**-0.5 if scale is None else scale
    q_CxBxPxKxGxd = jnp.moveaxis(q_BxTxHxd.reshape(B, C, P, Hkv, G, d), 1, 0)
    k_BxCxPxKxd = k_BxTxHkvxd.reshape(B, C, P, Hkv, d)
    v_BxCxPxKxd = v_BxTxHkvxd.reshape(B, C, P, Hkv, d)

    @jax.checkpoint
    def block(args):
        q_BxPxKxGxd, c = args
        return _one_block(q_BxPxKxGxd, c, k_BxCxPxKxd, v_BxCxPxKxd, scale)

    o_CxBxPxKxGxd = jax.lax.map(block, (q_CxBxPxKxGxd, jnp.arange(C, dtype=jnp.int32)))
    return jnp.moveaxis(o_CxBxPxKxGxd, 0, 1).reshape(B, T, H, d).astype(q_BxTxHxd.dtype)
