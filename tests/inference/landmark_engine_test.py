"""Landmark Attention's windowed inference: equal to the full forward where it must be.

Exact statements tested (docs/inference.md, "Landmark Attention"):
- a context that fits one window: prefill and decode equal the full forward;
- more windows, top-k >= the memory blocks: every block is selected and re-rotated at its true
  position, so the windowed result equals the full forward too;
- top-k < the memory blocks: the first window still equals the full forward; decoding equals
  the windowed prefill position by position (the same maths, one query at a time);
- offload equals on-device; selection picks the hand-made blocks at the documented slots.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.config import ConfigError, LandmarkConfig
from gca_jax.inference import generate, make_scorer
from gca_jax.inference.landmark_engine import LandmarkEngine, inserted_ids, raw_position
from gca_jax.modeling import build_model
from gca_jax.modeling.landmark_window import WindowStep, select_blocks
from gca_jax.modeling.layers import rope_at
from tests.modeling.conftest import tiny_model_config

P, W = 4, 8  # blocks of 3 raw tokens + landmark; windows of 2 blocks
T = 20  # 7 blocks = 28 positions: 4 windows, the last one partial


def _model(top_k: int):
    cfg = tiny_model_config(
        model_type="landmark",
        num_layers=2,
        num_kv_heads=2,  # grouped queries: 2 query heads per kv head
        window=-1,
        landmark=LandmarkConfig(block_len=P, eval_top_k=top_k, eval_window=W),
    )
    return build_model(cfg, rngs=nnx.Rngs(5))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(6).integers(0, 256, (2, T)).astype(np.int32)


@pytest.fixture(scope="module")
def wide():
    """top-k 6 >= the 6 memory blocks the last window sees."""
    return _model(6)


@pytest.fixture(scope="module")
def narrow():
    """top-k 1: a real selection from the second window on."""
    return _model(1)


@pytest.fixture(scope="module")
def narrow_engine(narrow):
    return LandmarkEngine(narrow)


def _full_logits(model, tokens):
    return np.asarray(jax.jit(lambda t: model.logits(t))(jnp.asarray(tokens)))


def test_inserted_layout():
    ids = inserted_ids(np.array([[1, 2, 3, 4, 5]]), 4, 9, 12)
    np.testing.assert_array_equal(ids, [[1, 2, 3, 9, 4, 5, -1, 9, -1, -1, -1, -1]])
    assert [raw_position(n, 4) for n in (0, 2, 3, 5, 6)] == [0, 2, 4, 6, 8]


def test_windows_with_every_block_selected_equal_the_full_forward(wide, tokens):
    full = _full_logits(wide, tokens)
    out = LandmarkEngine(wide).prefill(tokens, logits_at=np.arange(T), with_ce=True)
    np.testing.assert_allclose(out.logits, full, rtol=1e-5, atol=1e-5)
    loss, aux = wide.loss(jnp.asarray(tokens))
    np.testing.assert_allclose(out.ce_sum.sum() / out.ce_count.sum(), loss, rtol=1e-5)
    assert int(out.ce_count.sum()) == int(aux["tokens"])


def test_top_k_below_the_memory_first_window_exact_later_ones_not(narrow, narrow_engine, tokens):
    full = _full_logits(narrow, tokens)
    out = narrow_engine.prefill(tokens, logits_at=np.arange(T))
    first = 2 * (P - 1)  # raw tokens of the first window
    np.testing.assert_allclose(out.logits[:, :first], full[:, :first], rtol=1e-5, atol=1e-5)
    assert np.abs(out.logits[:, first:] - full[:, first:]).max() > 1e-3  # selection matters


def test_context_in_one_window_decodes_as_the_full_forward(narrow, narrow_engine, tokens):
    t = 2 * (P - 1)  # 6 raw tokens = 2 blocks = one window
    full = _full_logits(narrow, tokens[:, :t])
    logits, decoder = narrow_engine.start_decoding(tokens[:, :2], max_new_tokens=t - 2)
    got = [np.asarray(logits)] + [np.asarray(decoder.feed(tokens[:, i])) for i in range(2, t)]
    np.testing.assert_allclose(np.stack(got, axis=1), full[:, 1:t], rtol=1e-5, atol=1e-5)


def test_decode_equals_windowed_prefill_across_windows(narrow_engine, tokens):
    want = narrow_engine.prefill(tokens, logits_at=np.arange(T)).logits
    logits, decoder = narrow_engine.start_decoding(tokens[:, :4], max_new_tokens=T - 4)
    got = [np.asarray(logits)] + [np.asarray(decoder.feed(tokens[:, i])) for i in range(4, T)]
    np.testing.assert_allclose(np.stack(got, axis=1), want[:, 3:], rtol=1e-5, atol=1e-5)


def test_offload_equals_on_device(narrow, narrow_engine, tokens):
    offloaded = LandmarkEngine(narrow, offload=True)
    at = np.arange(T)
    want = narrow_engine.prefill(tokens, logits_at=at, with_ce=True)
    got = offloaded.prefill(tokens, logits_at=at, with_ce=True)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.ce_sum, want.ce_sum, rtol=1e-6)
    logits, decoder = offloaded.start_decoding(tokens[:, :12], max_new_tokens=3)
    fed = [np.asarray(logits)] + [np.asarray(decoder.feed(tokens[:, i])) for i in (12, 13)]
    np.testing.assert_allclose(np.stack(fed, 1), want.logits[:, 11:14], rtol=1e-5, atol=1e-5)


def test_greedy_generation_through_make_scorer(narrow, tokens):
    engine = make_scorer(narrow, segment_chunks=1)
    assert isinstance(engine, LandmarkEngine)
    new = generate(engine, [tokens[0, :3].tolist()], max_new_tokens=3)
    seq = np.concatenate([tokens[:1, :3], new], axis=1)
    full = _full_logits(narrow, seq)  # 6 tokens: one window
    np.testing.assert_array_equal(new[0], full[0, 2:5].argmax(-1))


def _hand_selection(scales, num_blocks, top_k):
    """Landmarks built so that query 0 scores block j as scales[j] (P = 4, d = 4, one head)."""
    theta = 10000.0
    q_1x1x1xd = jnp.array([1.0, 0.5, -0.3, 0.2]).reshape(1, 1, 1, 4)
    k_eff = min(top_k, num_blocks)
    pos = [
        (j - num_blocks) * P + P - 1 if j >= num_blocks - k_eff else -k_eff * P - 1
        for j in range(len(scales))
    ]
    # R(pos_j) k_j = scales[j] * q, so the logit is scales[j] * |q|^2 (the query sits at 0).
    keys = [rope_at(s * q_1x1x1xd[0, 0], jnp.float32(-p), theta) for s, p in zip(scales, pos)]
    lmk_1xEx1xd = jnp.stack(keys).reshape(1, len(scales), 1, 4)
    step = WindowStep(offset=jnp.int32(0), num_blocks=jnp.int32(num_blocks))
    return select_blocks(q_1x1x1xd, lmk_1xEx1xd, step, top_k=top_k, block_len=P, theta=theta)


def test_selection_picks_the_hand_made_blocks():
    # 6 blocks, K = 2: blocks 0..3 score with their landmark at -9, blocks 4, 5 at -5 and -1.
    sel = _hand_selection([1.0, 5.0, 2.0, 3.0, 4.0, 0.5, 9.0], num_blocks=6, top_k=2)
    np.testing.assert_array_equal(sel.idx_BxQxHxK[0, 0, 0], [1, 4])  # row 6 is not written
    np.testing.assert_array_equal(sel.slot_BxQxHxK[0, 0, 0], [-3, -1])  # rank 0 old, 1 recent
    np.testing.assert_array_equal(sel.valid_BxQxHxK[0, 0, 0], [True, True])
    # Fewer blocks than K: the one block at its true slot, the other pick invalid.
    sel = _hand_selection([1.0, 5.0, 2.0], num_blocks=1, top_k=2)
    assert int(sel.idx_BxQxHxK[0, 0, 0, 0]) == 0 and int(sel.slot_BxQxHxK[0, 0, 0, 0]) == -1
    np.testing.assert_array_equal(sel.valid_BxQxHxK[0, 0, 0], [True, False])


def test_errors(narrow_engine, tokens):
    with pytest.raises(ConfigError, match="eval_window"):
        LandmarkConfig(block_len=4, eval_window=6)
    with pytest.raises(ValueError, match="record"):
        narrow_engine.prefill(tokens, record=True)
    with pytest.raises(ValueError, match="capacity"):
        narrow_engine.prefill(tokens, capacity=1)
    with pytest.raises(ValueError, match="logits_at"):
        narrow_engine.prefill(tokens, logits_at=[T])
