"""Text generation: prefill of the prompt, then greedy or top-k sampled decoding.

Works with the engine of any model with the ``decode`` capability (the protocol in
``gca_jax.inference.scoring``): prompts are left-padded to ``engine.prompt_multiple``, then
``engine.start_decoding`` gives the first logits and a decoder fed one token per step.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


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


def left_pad_prompts(prompts: Sequence[Sequence[int]], multiple: int, pad_id: int) -> np.ndarray:
    """Left-pads prompts with ``pad_id`` to one common length, a multiple of ``multiple``.

    DRT's multiple is S (docs/spec.md §3.2).

    Raises:
      ValueError: no prompt, or an empty prompt (there is nothing to condition on).
    """
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: give at least one token")
    longest = max(len(p) for p in prompts)
    length = -(-longest // multiple) * multiple
    out = np.full((len(prompts), length), pad_id, np.int32)
    for i, p in enumerate(prompts):
        out[i, length - len(p) :] = np.asarray(p, np.int32)
    return out


def generate(
    engine,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    top_k: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    key: jax.Array | None = None,
    on_tokens: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Continues each prompt by ``max_new_tokens`` tokens.

    Args:
      engine: the inference engine of a model with the ``decode`` capability.
      prompts: B token-id sequences, each non-empty; left-padded with pad_id to a common
        multiple of ``engine.prompt_multiple`` (the pads are attended, as in the original).
      max_new_tokens: tokens to generate, >= 1.
      top_k: 1 = greedy (argmax); k > 1 = sample among the k most likely tokens.
      temperature: softmax temperature for sampling (> 0).
      top_p: < 1 = nucleus sampling within the top_k (all tokens for top_k = 1); see
        ``sample_next``.
      key: PRNG key for sampling (required when top_k > 1 or top_p < 1).
      on_tokens: called with each new (B,) int array, for streaming.

    Returns:
      (B, max_new_tokens) int32 generated ids.

    Raises:
      ValueError: empty prompts, bad sizes, or sampling without a key.
    """
    if max_new_tokens < 1:
        raise ValueError(f"{max_new_tokens=} must be >= 1")
    if top_k < 1 or temperature <= 0:
        raise ValueError(f"{top_k=} must be >= 1 and {temperature=} > 0")
    if not 0 < top_p <= 1:
        raise ValueError(f"{top_p=} must be in (0, 1]")
    if (top_k > 1 or top_p < 1) and key is None:
        raise ValueError("sampling (top_k > 1 or top_p < 1) needs a PRNG key")
    key = jax.random.key(0) if key is None else key
    tokens_BxT = left_pad_prompts(prompts, engine.prompt_multiple, engine.cfg.pad_id)
    logits_BxV, decoder = engine.start_decoding(tokens_BxT, max_new_tokens)
    new = []
    for i in range(max_new_tokens):
        key, sub = jax.random.split(key)
        ids_B = sample_next(logits_BxV, sub, top_k=top_k, temperature=temperature, top_p=top_p)
        new.append(np.asarray(ids_B))
        if on_tokens is not None:
            on_tokens(new[-1])
        if i + 1 < max_new_tokens:
            logits_BxV = decoder.feed(ids_B)
    return np.stack(new, axis=1)
