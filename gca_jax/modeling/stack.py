"""Stacks of identical layers, created with vmap and applied with scan + remat."""

from collections.abc import Callable

import jax
from flax import nnx

from gca_jax.config import RematPolicy

# What each rematerialising choice of ``RematPolicy`` (declared in the config schema) saves;
# "none" does not rematerialise at all.
_POLICIES: dict[RematPolicy, object] = {
    "full": None,  # save nothing: recompute the whole layer in the backward
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_body(fn: Callable, remat: RematPolicy) -> Callable:
    """``fn`` rematerialised as ``remat`` says (for a scan body); unchanged for "none"."""
    if remat == "none":
        return fn
    return jax.checkpoint(fn, policy=_POLICIES[remat], prevent_cse=False)


def make_stack(
    factory: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Builds ``num_layers`` layers as one module whose parameters have a leading layer axis."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(layer_rngs: nnx.Rngs) -> nnx.Module:
        return factory(layer_rngs)

    return build(rngs)


def apply_stack(
    stack: nnx.Module, h: jax.Array, *args, remat: RematPolicy = "full", cache=None, step=None
):
    """Runs ``h = layer(h, *args)`` for each stacked layer with lax.scan, rematerialised.

    With a ``cache`` (a pytree whose leaves have a leading layer axis, see
    ``gca_jax.modeling.cache``) each layer gets its slice and ``step``, and the stack returns
    ``(h, new cache)``; inference does not differentiate, so nothing is rematerialised then.
    """
    graphdef, state = nnx.split(stack)
    if cache is not None:

        def cached_body(carry, xs):
            layer_state, layer_cache = xs
            return nnx.merge(graphdef, layer_state)(carry, *args, layer_cache, step)

        return jax.lax.scan(cached_body, h, (state, cache))

    def body(carry, layer_state):
        layer = nnx.merge(graphdef, layer_state)
        return layer(carry, *args), None

    if remat != "none":
        body = jax.checkpoint(body, policy=_POLICIES[remat], prevent_cse=False)
    h, _ = jax.lax.scan(body, h, state)
    return h
