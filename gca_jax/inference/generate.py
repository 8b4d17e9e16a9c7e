"""Text generation: prefill of the prompt, then greedy or top-k sampled decoding.

Works with the engine of any model with the ``decode`` capability (the protocol in
``gca_jax.inference.scoring``): prompts are left-padded to ``engine.prompt_multiple``, then
``engine.start_decoding`` gives the first logits and a decoder fed one token per step.
A decoder that also has ``span(remaining)`` and ``feed_sampled(ids_B, key, n, ...)`` generates
up to ``span`` tokens per jitted call (``gca_jax.inference.sampling.sampled_steps``), with the
same tokens as the token-by-token loop.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

from gca_jax.inference.sampling import sample_next


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
      on_tokens: called with each new (B,) int array, for streaming (a fused decoder hands
        them over span by span).

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
    sampling = dict(top_k=top_k, temperature=temperature, top_p=top_p)
    key, sub = jax.random.split(key)
    new = [np.asarray(sample_next(logits_BxV, sub, **sampling))]
    if on_tokens is not None:
        on_tokens(new[-1])
    fused = hasattr(decoder, "feed_sampled")
    while len(new) < max_new_tokens:
        if fused:  # feed the last token and sample the next ones, a span per jitted call
            n = decoder.span(max_new_tokens - len(new))
            ids_BxN, key = decoder.feed_sampled(new[-1], key, n, **sampling)
            span = list(np.asarray(ids_BxN).T)
        else:
            logits_BxV = decoder.feed(new[-1])
            key, sub = jax.random.split(key)
            span = [np.asarray(sample_next(logits_BxV, sub, **sampling))]
        for ids_B in span:
            new.append(ids_B)
            if on_tokens is not None:
                on_tokens(ids_B)
    return np.stack(new, axis=1)
