"""Segmented prefill equals the unsegmented forward (model.logits / model.loss), on device and
with host offload, including retrieval across segment boundaries and left padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.inference import Engine, pad_left
from gca_jax.modeling import MissingCapabilityError, build_model
from tests.modeling.conftest import tiny_model_config

T = 15 * 7  # 7 chunks: segments of 2 chunks -> 2, 2, 2, 1 (first, middle, short last shapes)


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 256, (2, T)).astype(np.int32)


@pytest.fixture(scope="module")
def engines(tiny_model):
    """One engine per memory placement, shared so compiled steps are reused.

    2-chunk segments: C * K = 6 < E = 7 memory rows, so the device path compacts the memory.
    """
    return {off: Engine(tiny_model, segment_chunks=2, offload=off) for off in (False, True)}


@pytest.fixture(scope="module")
def full_logits(tiny_model, tokens):
    return np.asarray(jax.jit(lambda t: tiny_model.logits(t))(jnp.asarray(tokens)))


@pytest.mark.parametrize("offload", [False, True])
def test_segmented_equals_unsegmented(tiny_model, engines, tokens, full_logits, offload):
    engine = engines[offload]
    out = engine.prefill(tokens, logits_at=np.arange(T), with_ce=True, record=True)
    np.testing.assert_allclose(out.logits, full_logits, rtol=1e-5, atol=1e-5)
    loss, _ = tiny_model.loss(jnp.asarray(tokens))
    np.testing.assert_allclose(out.ce_sum.sum() / out.ce_count.sum(), float(loss), rtol=1e-5)
    # Chunks 2 and 4 open segments; they use the previous segment's last row (fix of the
    # original's zero GCA there), so their retrieval weights sum to one.
    for idx, w in out.retrievals:
        assert idx.shape == (2, 7, 3)
        np.testing.assert_allclose(w[:, [2, 4]].sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(w[:, :2], 0.0)


def test_offload_equals_device_retrieval(engines, tokens):
    dev = engines[False].prefill(tokens, logits_at=[T - 1], record=True)
    host = engines[True].prefill(tokens, logits_at=[T - 1], record=True)
    np.testing.assert_array_equal(host.logits, dev.logits)
    for (i_d, w_d), (i_h, w_h) in zip(dev.retrievals, host.retrievals):
        np.testing.assert_array_equal(i_h, i_d)
        np.testing.assert_array_equal(w_h, w_d)


def test_length_not_multiple_of_chunk_is_left_padded(tiny_model, engines, tokens):
    cfg = tiny_model.cfg
    short = tokens[:, 7:]  # T - 7 tokens: 7 pads on the left
    padded, pad = pad_left(short, cfg.retrieval.chunk_len, cfg.pad_id)
    assert pad == 7 and np.all(padded[:, :7] == cfg.pad_id)
    want = np.asarray(tiny_model.logits(jnp.asarray(padded)))[:, pad:]
    out = engines[False].prefill(short, logits_at=[0, 50, T - 8])
    assert out.pad == 7
    np.testing.assert_allclose(out.logits, want[:, [0, 50, T - 8]], rtol=1e-5, atol=1e-5)


def test_bad_inputs(tiny_model, engines):
    engine = engines[False]
    with pytest.raises(ValueError, match="non-empty"):
        engine.prefill(np.zeros((1, 0), np.int32))
    with pytest.raises(ValueError, match="logits_at"):
        engine.prefill(np.zeros((1, 30), np.int32), logits_at=[30])
    with pytest.raises(ValueError, match="segment_chunks"):
        Engine(tiny_model, segment_chunks=1)  # 16 positions < W = 32
    import tests.modeling.dummy_lm  # noqa: F401  (registers the score-only model_type dummy_bag)

    bag = build_model(tiny_model_config(model_type="dummy_bag"), rngs=nnx.Rngs(0))
    with pytest.raises(MissingCapabilityError, match="model_type='dummy_bag'.*segmented"):
        Engine(bag)
    swa = build_model(tiny_model_config(model_type="swa_lm"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="chunk-memory models.*its own engine"):
        Engine(swa)
