"""The sliding-window LM's engine equals its full forward: segmented prefill, decode, generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.inference import generate, left_pad_prompts
from gca_jax.inference.swa_engine import SlidingWindowDecoder, SlidingWindowEngine
from gca_jax.modeling import build_model
from tests.inference.conftest import TokenByToken
from tests.modeling.conftest import tiny_model_config

T = 150  # W = 32; segments of 64 tokens: 3 segments, the last one short


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model_config(model_type="swa_lm", num_layers=2), rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def engine(model):
    return SlidingWindowEngine(model, segment_chunks=1)


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(4).integers(0, 256, (2, T)).astype(np.int32)


@pytest.fixture(scope="module")
def full_logits(model, tokens):
    return np.asarray(jax.jit(lambda t: model.logits(t))(jnp.asarray(tokens)))


def test_segmented_prefill_equals_the_full_forward(model, engine, tokens, full_logits):
    at = np.array([[0, 63, 64, 149], [5, 100, 128, 140]])
    out = engine.prefill(tokens, logits_at=at, with_ce=True)
    want = np.take_along_axis(full_logits, at[:, :, None], axis=1)
    np.testing.assert_allclose(out.logits, want, rtol=1e-5, atol=1e-5)
    loss, aux = model.loss(jnp.asarray(tokens))
    np.testing.assert_allclose(out.ce_sum.sum() / out.ce_count.sum(), loss, rtol=1e-5)
    assert int(out.ce_count.sum()) == int(aux["tokens"])


def test_prefill_then_decode_equals_the_full_forward(engine, tokens, full_logits):
    logits, decoder = engine.start_decoding(tokens[:, :70], max_new_tokens=80)
    np.testing.assert_allclose(logits, full_logits[:, 69], rtol=1e-5, atol=1e-5)
    got = np.stack([np.asarray(decoder.feed(tokens[:, i])) for i in range(70, T)], axis=1)
    np.testing.assert_allclose(got, full_logits[:, 70:], rtol=1e-5, atol=1e-5)


def test_decode_after_a_prompt_shorter_than_the_window(engine, tokens, full_logits):
    _, decoder = engine.start_decoding(tokens[:, :5], max_new_tokens=60)
    got = np.stack([np.asarray(decoder.feed(tokens[:, i])) for i in range(5, 60)], axis=1)
    np.testing.assert_allclose(got, full_logits[:, 5:60], rtol=1e-5, atol=1e-5)


def test_greedy_generation_equals_argmax_of_the_full_forward(model, engine):
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, 256, 20).tolist(), rng.integers(0, 256, 9).tolist()]
    new = generate(engine, prompts, max_new_tokens=40)
    seq = np.concatenate([left_pad_prompts(prompts, 1, model.cfg.pad_id), new], axis=1)
    logits = np.asarray(model.logits(jnp.asarray(seq)))
    np.testing.assert_array_equal(np.argmax(logits[:, 19:-1], -1), seq[:, 20:])


def test_sampled_spans_equal_token_by_token_generation(engine, monkeypatch):
    monkeypatch.setattr(SlidingWindowDecoder, "max_span", 16)  # spans 16, 16, 7
    rng = np.random.default_rng(6)
    prompts = [rng.integers(0, 256, 20).tolist(), rng.integers(0, 256, 9).tolist()]
    sampling = dict(max_new_tokens=40, top_k=5, top_p=0.9, temperature=0.8, key=jax.random.key(7))
    fused = generate(engine, prompts, **sampling)
    np.testing.assert_array_equal(fused, generate(TokenByToken(engine), prompts, **sampling))
    assert len(set(fused[0].tolist())) > 3  # really sampled, not greedy


def test_full_attention_scores_in_one_forward_and_cannot_decode(tokens):
    full = build_model(
        tiny_model_config(model_type="swa_lm", num_layers=1, window=-1), rngs=nnx.Rngs(0)
    )
    eng = SlidingWindowEngine(full, segment_chunks=1)
    out = eng.prefill(tokens, logits_at=[149])
    want = np.asarray(full.logits(jnp.asarray(tokens)))[:, [149]]
    np.testing.assert_allclose(out.logits, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="full-attention LM"):
        eng.start_decoding(tokens, max_new_tokens=2)


def test_bad_arguments(model, engine):
    with pytest.raises(ValueError, match="nothing to offload"):
        SlidingWindowEngine(model, offload=True)
    cfg = tiny_model_config(model_type="swa_lm", num_layers=1, window=100)
    with pytest.raises(ValueError, match="cover the window"):
        SlidingWindowEngine(build_model(cfg, rngs=nnx.Rngs(0)), segment_chunks=1)
    with pytest.raises(ValueError, match="non-empty"):
        engine.prefill(np.zeros((1, 0), np.int32))
    with pytest.raises(ValueError, match="no such option"):
        engine.prefill(np.zeros((1, 8), np.int32), record=True)
