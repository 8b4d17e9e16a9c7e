"""Basic layers: dense projections, RMSNorm, SwiGLU, embeddings, ALiBi slopes and RoPE.

Parameters carry logical axis names (``logical_axes`` metadata) that ``gca_jax.sharding`` maps to
mesh axes; nothing here knows about meshes.
"""

import jax
import jax.numpy as jnp
from flax import nnx

_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def to_dtype(name: str) -> jnp.dtype:
    """Maps a config dtype name to a jnp dtype."""
    return _DTYPES[name]


class Dense(nnx.Module):
    """Bias-free linear map ``x @ kernel`` with N(0, std) init (spec §1.13)."""

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
        return jnp.dot(
            x_xD.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            preferred_element_type=jnp.float32,
        ).astype(self.dtype)


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
    """W_down(silu(W_gate x) * W_up x), no biases (spec §1.5)."""

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
    """Token embedding, tied with the output head; the pad row starts at zero (spec §1.4)."""

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
        """Looks up float32 embeddings; negative ids read the pad row (spec §1.2)."""
        ids = jnp.where(ids < 0, self.pad_id, ids)
        return jnp.take(self.table[...], ids, axis=0).astype(jnp.float32)


def alibi_slopes(num_heads: int) -> jax.Array:
    """m_h = 2^(-8 (h + 1) / H) for h = 0..H-1, the plain geometric formula (spec §1.5)."""
    h = jnp.arange(1, num_heads + 1, dtype=jnp.float32)
    return jnp.exp2(-8.0 * h / num_heads)


def apply_rope(x_xPxHxd: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding over axis -3 (positions 0..P-1), HF rotate-half convention (spec §1.6)."""
    p, d = x_xPxHxd.shape[-3], x_xPxHxd.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles_Pxd2 = jnp.arange(p, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles_Pxd = jnp.concatenate([angles_Pxd2, angles_Pxd2], axis=-1)
    lead = (1,) * (x_xPxHxd.ndim - 3)
    cos_Px1xd = jnp.cos(angles_Pxd).reshape(lead + (p, 1, d))
    sin_Px1xd = jnp.sin(angles_Pxd).reshape(lead + (p, 1, d))
    x32 = x_xPxHxd.astype(jnp.float32)
    x1, x2 = x32[..., : d // 2], x32[..., d // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * cos_Px1xd + rotated * sin_Px1xd).astype(x_xPxHxd.dtype)
