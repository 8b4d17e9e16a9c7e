"""Decoding equals the full forward: token by token, after a prefill, across chunk completions
(memory appends and retrieval refreshes), with batch > 1, on device and offloaded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.inference import Decoder, Engine, generate, left_pad_prompts, sample_next
from tests.inference.conftest import TokenByToken

T = 15 * 7


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(1).integers(0, 256, (2, T)).astype(np.int32)


@pytest.fixture(scope="module")
def engines(tiny_model):
    """One engine per memory placement, shared so compiled steps are reused."""
    return {off: Engine(tiny_model, segment_chunks=3, offload=off) for off in (False, True)}


@pytest.fixture(scope="module")
def full_logits(tiny_model, tokens):
    return np.asarray(jax.jit(lambda t: tiny_model.logits(t))(jnp.asarray(tokens)))


def test_token_by_token_equals_full_forward(engines, tokens, full_logits):
    decoder = Decoder(engines[False], batch=2, capacity=8)
    got = np.stack([np.asarray(decoder.feed(tokens[:, i])) for i in range(T)], axis=1)
    np.testing.assert_allclose(got, full_logits, rtol=1e-5, atol=1e-5)
    assert decoder.store.num_chunks == 7


@pytest.mark.parametrize("offload", [False, True])
def test_prefill_then_decode_equals_full_forward(engines, tokens, full_logits, offload):
    engine = engines[offload]
    out = engine.prefill(tokens[:, :60], logits_at=[59], keep_state=True, capacity=8)
    np.testing.assert_allclose(out.logits[:, 0], full_logits[:, 59], rtol=1e-5, atol=1e-5)
    decoder = Decoder(engine, out.carry)
    got = np.stack([np.asarray(decoder.feed(tokens[:, i])) for i in range(60, T)], axis=1)
    np.testing.assert_allclose(got, full_logits[:, 60:], rtol=1e-5, atol=1e-5)


def test_greedy_generation_equals_argmax_of_full_forward(tiny_model, engines):
    cfg = tiny_model.cfg
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 256, 20).tolist(), rng.integers(0, 256, 33).tolist()]
    engine = engines[False]
    new = generate(engine, prompts, max_new_tokens=60)  # 45 + 60 = 105 = 7 chunks
    padded = left_pad_prompts(prompts, cfg.retrieval.chunk_len, cfg.pad_id)
    seq = np.concatenate([padded, new], axis=1)
    logits = np.asarray(tiny_model.logits(jnp.asarray(seq)))
    np.testing.assert_array_equal(np.argmax(logits[:, 44:-1], -1), seq[:, 45:])


def test_sampled_spans_equal_token_by_token_generation(engines):
    """The fused chunk spans draw the same tokens as feed + sample_next per token (same keys)."""
    rng = np.random.default_rng(6)
    prompts = [rng.integers(0, 256, 20).tolist(), rng.integers(0, 256, 33).tolist()]
    engine = engines[False]
    sampling = dict(max_new_tokens=40, top_k=5, top_p=0.9, temperature=0.8)  # spans 15, 15, 9
    seen = []
    fused = generate(engine, prompts, key=jax.random.key(7), on_tokens=seen.append, **sampling)
    stepwise = generate(TokenByToken(engine), prompts, key=jax.random.key(7), **sampling)
    np.testing.assert_array_equal(fused, stepwise)
    np.testing.assert_array_equal(np.stack(seen, axis=1), fused)
    assert len(set(fused[0].tolist())) > 3  # really sampled, not greedy


def test_a_span_past_the_chunk_end_is_refused(engines):
    decoder = Decoder(engines[False], batch=1, capacity=4)
    decoder.feed(np.array([3]))
    assert decoder.span(100) == 14
    with pytest.raises(ValueError, match="span"):
        decoder.feed_sampled([3], jax.random.key(0), 15, top_k=1, temperature=1.0, top_p=1.0)


def test_top_k_sampling():
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(4, 50)), jnp.float32)
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    for seed in range(5):
        ids = np.asarray(sample_next(logits, jax.random.key(seed), top_k=3, temperature=1.0))
        assert all(ids[b] in top3[b] for b in range(4))
    greedy = sample_next(logits, jax.random.key(0), top_k=1, temperature=1.0)
    np.testing.assert_array_equal(greedy, np.argmax(np.asarray(logits), -1))


def test_empty_prompt_is_rejected(engines):
    engine = engines[False]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(engine, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="key"):
        generate(engine, [[1, 2]], max_new_tokens=2, top_k=5)
