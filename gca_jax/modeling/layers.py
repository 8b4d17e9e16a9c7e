"""Basic layers: dense projections, RMSNorm, SwiGLU, embeddings, ALiBi slopes and RoPE.

Parameters carry logical axis names (``logical_axes`` metadata) that ``gca_jax.sharding`` maps to
mesh axes; nothing here knows about meshes.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def to_dtype(name: str) -> jnp.dtype:
    """Maps a config dtype name to a jnp dtype."""
    return _DTYPES[name]


def mixed_matmul(x_xK, w, compute_dtype, out_dtype, w_transposed: bool = False) -> jax.Array:
    """Matmul x @ w (w: (K, N)), or x @ w.T with w_transposed (w: (N, K)), in compute dtype.

    Both operands are cast to ``compute_dtype``; products accumulate in float32 and the result is
    cast to ``out_dtype``. The backward casts the cotangent to the compute dtype too, so all three
    products (forward, dx, dw) run at the compute dtype's tensor-core rate. Plain autodiff of a
    bf16 dot with a float32 output multiplies a float32 cotangent by a bf16 operand, which XLA
    runs as a float32 (TF32) matmul: measured, those took 40% of DRT-128M's train step on an
    H200 (docs/performance.md). dx comes back in x's dtype, dw in w's: float32 parameters get a
    float32 gradient from a bf16 product.
    """
    return _mixed_matmul(x_xK, w, compute_dtype, out_dtype, w_transposed, x_xK.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _mixed_matmul(x_xK, w, compute_dtype, out_dtype, w_transposed, x_dtype):
    return _mixed_matmul_fwd(x_xK, w, compute_dtype, out_dtype, w_transposed, x_dtype)[0]


def _mixed_matmul_fwd(x_xK, w, compute_dtype, out_dtype, w_transposed, x_dtype):
    x_c = x_xK.astype(compute_dtype)
    dims = (((x_c.ndim - 1,), (1 if w_transposed else 0,)), ((), ()))
    y = jax.lax.dot_general(x_c, w.astype(compute_dtype), dims, preferred_element_type=jnp.float32)
    return y.astype(out_dtype), (x_c, w)


def _mixed_matmul_bwd(compute_dtype, out_dtype, w_transposed, x_dtype, res, ct_xN):
    x_c, w = res
    ct_c = ct_xN.astype(compute_dtype)
    n_axis = 0 if w_transposed else 1
    dx = jax.lax.dot_general(
        ct_c,
        w.astype(compute_dtype),
        (((ct_c.ndim - 1,), (n_axis,)), ((), ())),
        preferred_element_type=x_dtype,
    )
    lead = (tuple(range(x_c.ndim - 1)),) * 2  # contract every leading (token) axis
    if w_transposed:  # dw (N, K) = ct^T x
        dw = jax.lax.dot_general(ct_c, x_c, (lead, ((), ())), preferred_element_type=w.dtype)
    else:  # dw (K, N) = x^T ct
        dw = jax.lax.dot_general(x_c, ct_c, (lead, ((), ())), preferred_element_type=w.dtype)
    return dx, dw


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


class Dense(nnx.Module):
    """Bias-free linear map ``x @ kernel`` with N(0, std) init (docs/spec.md §1.13)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        logical_axes: tuple[str, str],
        std: float,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        init = jax.random.normal(rngs.params(), (in_features, out_features), param_dtype) * std
        self.kernel = nnx.Param(init.astype(param_dtype), logical_axes=logical_axes)
        self.dtype = dtype

    def __call__(self, x_xD: jax.Array) -> jax.Array:
        """(..., in) -> (..., out) in the compute dtype, float32 accumulation."""
        return mixed_matmul(x_xD, self.kernel[...], self.dtype, self.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """X * rsqrt(mean(x^2) + eps) * scale, in float32."""
    x32 = x.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    scale = scale.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + (-1,))
    return x32 * inv * scale


class RMSNorm(nnx.Module):
    """RMSNorm with a learned scale initialised to one, computed in float32."""

    def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype, out_dtype: jnp.dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
        self.eps = eps
        self.out_dtype = out_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises the last axis; output in ``out_dtype``."""
        return rms_norm(x, self.scale[...], self.eps).astype(self.out_dtype)


class SwiGLU(nnx.Module):
    """W_down(silu(W_gate x) * W_up x), no biases (docs/spec.md §1.5)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        std: float,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        kw = dict(std=std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate = Dense(dim, hidden, logical_axes=("embed", "mlp"), **kw)
        self.up = Dense(dim, hidden, logical_axes=("embed", "mlp"), **kw)
        self.down = Dense(hidden, dim, logical_axes=("mlp", "embed"), **kw)

    def __call__(self, x_xD: jax.Array) -> jax.Array:
        """(..., D) -> (..., D)."""
        return self.down(jax.nn.silu(self.gate(x_xD)) * self.up(x_xD))


class Embedding(nnx.Module):
    """Token embedding, tied to the output head; the pad row starts at zero (docs/spec.md §1.4)."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        pad_id: int,
        std: float,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        table = jax.random.normal(rngs.params(), (vocab_size, dim), jnp.float32) * std
        table = table.at[pad_id].set(0.0)
        self.table = nnx.Param(table.astype(param_dtype), logical_axes=("vocab", "embed"))
        self.pad_id = pad_id

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Looks up float32 embeddings; negative ids read the pad row (docs/spec.md §1.2)."""
        ids = jnp.where(ids < 0, self.pad_id, ids)
        return jnp.take(self.table[...], ids, axis=0).astype(jnp.float32)


def alibi_slopes(num_heads: int) -> jax.Array:
    """m_h = 2^(-8 (h + 1) / H) for h = 0..H-1, the plain geometric formula (docs/spec.md §1.5)."""
    h = jnp.arange(1, num_heads + 1, dtype=jnp.float32)
    return jnp.exp2(-8.0 * h / num_heads)


def apply_rope(x_xPxHxd: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding over axis -3 (positions 0..P-1), rotate-half pairs (docs/spec.md §1.6)."""
    pos_Px1 = jnp.arange(x_xPxHxd.shape[-3], dtype=jnp.float32)[:, None]
    return rope_at(x_xPxHxd, pos_Px1, theta)


def rope_at(x_xd: jax.Array, pos: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x_xd`` (..., d) at positions ``pos`` (broadcastable to x's (...)).

    Positions may be any (also negative) numbers: RoPE logits depend only on differences.
    """
    d = x_xd.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    pos = jnp.asarray(pos, jnp.float32)
    pos = pos.reshape((1,) * (x_xd.ndim - 1 - pos.ndim) + pos.shape + (1,))  # rank of x
    angles_xd2 = pos * inv_freq.reshape((1,) * (x_xd.ndim - 1) + (-1,))
    angles_xd = jnp.concatenate([angles_xd2, angles_xd2], axis=-1)
    x32 = x_xd.astype(jnp.float32)
    x1, x2 = x32[..., : d // 2], x32[..., d // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * jnp.cos(angles_xd) + rotated * jnp.sin(angles_xd)).astype(x_xd.dtype)
