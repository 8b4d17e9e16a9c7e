"""RPT-style baseline with a fixed retriever: DRT's layout, BM25 (or given) chunk vectors.

Checks: exact parameter count, only nnx.Param state, retrieval never looks ahead (indices and
gradients), no gradient through the scores, the precomputed-vector hook, and that segmented
prefill, host offload and decoding (DRT's engine, unchanged) equal the full forward.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.config import ConfigError, RPTConfig, load_config
from gca_jax.inference import Decoder, Engine
from gca_jax.modeling import build_model, count_params
from gca_jax.modeling.retrieval import lag_one_chunk
from tests.modeling.conftest import ROOT, S, tiny_model_config

KEYS = 16  # width of the test's precomputed vectors


def first_token_vectors(tokens_BxCxS):
    """A stand-in dense retriever: a chunk's vector is the one-hot of its first token mod 16."""
    return jax.nn.one_hot(tokens_BxCxS[..., 0] % KEYS, KEYS)


def _rpt_config(*, retrieval=None, **rpt):
    cfg = tiny_model_config(retrieval=retrieval)
    return dataclasses.replace(cfg, model_type="rpt", rpt=RPTConfig(**rpt))


def _tokens(seed, b, c, vocab=40):
    """Token ids from a small vocabulary, so that chunks share terms (non-trivial BM25)."""
    return np.random.default_rng(seed).integers(0, vocab, (b, c * S)).astype(np.int32)


@pytest.fixture(scope="module")
def model():
    """Tiny RPT ret x2 (S=15, W=32, K=3), uniform idf, float32."""
    return build_model(_rpt_config(), rngs=nnx.Rngs(0))


def test_parameter_count_of_rpt_128m_by_formula():
    cfg = load_config(ROOT / "configs" / "rpt_128m.yaml", ["model.rpt.idf_path=null"]).model
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    d, f, v = cfg.hidden_size, cfg.mlp_hidden, cfg.vocab_size
    layer = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU, two norms (Hkv = H)
    upper = sum(cfg.retrieval.group_layers)
    expected = (
        v * d  # tied embedding
        + cfg.num_layers * layer  # lower and upper decoder layers
        + upper * (2 * d * d + d)  # GCA q/o projections and pre-norm
        + cfg.retrieval.encoder_layers * layer  # chunk encoder
        + 2 * d  # encoder pre- and post-norm
        + 2 * d * d  # shared chunk K/V projections
        + d  # final norm
    )  # DRT's landmark-query norms are absent: a fixed retriever has no learned query
    assert count_params(model) == expected == 145_980_672 - d
    _, _, rest = nnx.split(model, nnx.Param, ...)
    assert not jax.tree.leaves(rest)  # the idf is a constant, not state
    assert model.landmark_dim == v  # identity hash: exact BM25 over GPT-2 ids


def test_retrieval_never_looks_ahead(model):
    """Every chunk repeats a later one exactly; BM25 would rank the later copy first."""
    c = 8
    base = _tokens(1, 2, c)
    tokens = jnp.asarray(np.concatenate([base[:, S:], base[:, :S]], axis=1))  # chunk 7 = chunk 0
    h = model.embed_chunks(tokens).reshape(2, c, S + 1, -1)
    memory = model.build_memory(h, tokens)
    rows = model.retrieve(0, h, memory.landmarks, jnp.arange(c))
    idx, w = np.asarray(rows.idx), np.asarray(rows.w)
    picked = w > 0
    assert picked[:, 1:].any(axis=-1).all()  # every row with a past retrieves something
    np.testing.assert_array_equal(w[:, 0], 0.0)  # row 0 has no past
    assert (idx < np.arange(c)[None, :, None])[picked].all()
    ret = lag_one_chunk(rows)  # chunk c reads only chunks <= c - 2
    assert (np.asarray(ret.idx) <= np.arange(c)[None, :, None] - 2)[np.asarray(ret.w) > 0].all()
    np.testing.assert_allclose(w.sum(-1)[:, 1:], 1.0, rtol=1e-6)


def test_causality_by_gradient_and_by_changing_later_tokens(model):
    c, p = 8, S + 1
    tokens = jnp.asarray(_tokens(2, 1, c))
    emb = model.embed_chunks(tokens)
    pos = 6 * p + 4  # a raw token of chunk 6
    probe = jax.random.normal(jax.random.key(5), (emb.shape[-1],))

    def out(e):
        h, _ = model.hidden_from_embeddings(e, tokens_BxT=tokens)
        return jnp.dot(h.reshape(1, c * p, -1)[0, pos], probe)

    grad = np.asarray(jax.jit(jax.grad(out))(emb))[0]
    np.testing.assert_array_equal(grad[pos + 1 :], 0.0)
    assert np.abs(grad[:p]).sum() > 0, "no gradient through GCA to chunk 0"
    # The retriever reads token ids, not embeddings: later tokens must not move earlier logits.
    t = 6 * S + 4
    changed = tokens.at[:, t + 1 :].set(jnp.flip(tokens[:, t + 1 :], axis=1))
    logits = jax.jit(lambda x: model.logits(x))
    np.testing.assert_array_equal(logits(changed)[:, : t + 1], logits(tokens)[:, : t + 1])


def test_no_gradient_reaches_the_retrieval_scores(model):
    c = 6
    tokens = jnp.asarray(_tokens(3, 1, c))
    h = model.embed_chunks(tokens).reshape(1, c, S + 1, -1)
    keys = model.build_memory(h, tokens).landmarks

    def weights(h, keys):
        return jnp.sum(model.retrieve(0, h, keys, jnp.arange(c)).w ** 2)

    g_h, g_keys = jax.grad(weights, argnums=(0, 1))(h, keys)
    np.testing.assert_array_equal(g_h, 0.0)
    np.testing.assert_array_equal(g_keys, 0.0)
    _, grads = nnx.value_and_grad(lambda m: jnp.sum(m.build_memory(h, tokens).landmarks))(model)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads))


def test_precomputed_vectors_force_a_known_retrieval():
    cfg = _rpt_config(
        retriever="precomputed",
        vectors_fn="tests.modeling.rpt_test:first_token_vectors",
        score_scale=50.0,
    )
    model = build_model(cfg, rngs=nnx.Rngs(0))
    assert model.landmark_dim == KEYS
    c = 7
    tokens = _tokens(4, 1, c)
    tokens[0, ::S] = np.arange(c)  # chunk i's key is i ...
    tokens[0, 5 * S] = 1  # ... but chunk 5's is chunk 1's
    tokens = jnp.asarray(tokens)
    h = model.embed_chunks(tokens).reshape(1, c, S + 1, -1)
    rows = model.retrieve(0, h, model.build_memory(h, tokens).landmarks, jnp.arange(c))
    assert int(rows.idx[0, 5, 0]) == 1
    np.testing.assert_allclose(float(rows.w[0, 5, 0]), 1.0, rtol=1e-6)


def test_the_retriever_fields_are_checked():
    with pytest.raises(ConfigError, match="vectors_fn.*exactly when model.rpt.retriever"):
        RPTConfig(retriever="precomputed")
    with pytest.raises(ConfigError, match="idf_path.*read only by model.rpt.retriever=bm25"):
        RPTConfig(retriever="precomputed", vectors_fn="m:f", idf_path="x/bm25_idf.npy")
    bad = _rpt_config(retriever="precomputed", vectors_fn="tests.modeling.rpt_test:KEYS")
    with pytest.raises(ValueError, match="is not callable"):
        build_model(bad, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def small():
    """1 lower layer + 1 group of 1 (fewer compilations); the segment and decode cases."""
    cfg = _rpt_config(retrieval=dict(group_layers=(1,)))
    model = build_model(dataclasses.replace(cfg, num_layers=2), rngs=nnx.Rngs(0))
    tokens = _tokens(5, 2, 6)
    full = np.asarray(jax.jit(lambda t: model.logits(t))(jnp.asarray(tokens)))
    return model, tokens, full


@pytest.mark.parametrize("offload", [False, True])
def test_segmented_prefill_equals_the_full_forward(small, offload):
    model, tokens, full = small
    engine = Engine(model, segment_chunks=2, offload=offload)
    t = tokens.shape[1]
    out = engine.prefill(tokens, logits_at=np.arange(t), record=True)
    np.testing.assert_allclose(out.logits, full, rtol=1e-5, atol=1e-5)
    idx, w = out.retrievals[0]
    assert (idx <= np.arange(t // S)[None, :, None] - 2)[w > 0].all()


def test_prefill_then_decode_equals_the_full_forward(small):
    model, tokens, full = small
    engine = Engine(model, segment_chunks=2)
    out = engine.prefill(tokens[:, : 3 * S], keep_state=True, capacity=6)
    decoder = Decoder(engine, out.carry)
    got = [np.asarray(decoder.feed(tokens[:, i])) for i in range(3 * S, tokens.shape[1])]
    np.testing.assert_allclose(np.stack(got, 1), full[:, 3 * S :], rtol=1e-5, atol=1e-5)
    assert decoder.store.num_chunks == 6  # three chunks completed while decoding
