"""Landmark Attention LM: parameter count, shapes, causality, raw-token loss, FLOPs."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.config import ConfigError, LandmarkConfig, load_config
from gca_jax.modeling import build_model, count_params, flops_per_token
from gca_jax.modeling.stack import apply_stack
from tests.modeling.conftest import ROOT, tiny_model_config

P = 8  # block_len of the test model: 7 raw tokens, then the landmark


def landmark_config(block_len=P, **changes):
    """The tiny.yaml sizes as a 2-layer float32 landmark model."""
    return tiny_model_config(
        model_type="landmark",
        num_layers=2,
        window=-1,
        landmark=LandmarkConfig(block_len=block_len),
        **changes,
    )


def _tokens(key, b, t, vocab=256):
    return jax.random.randint(jax.random.key(key), (b, t), 0, vocab, jnp.int32)


def test_parameter_count_of_landmark_128m():
    cfg = load_config(ROOT / "configs" / "landmark_128m.yaml").model
    assert (cfg.landmark.block_len, cfg.landmark.eval_top_k, cfg.num_layers) == (64, 4, 12)
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    assert count_params(model) == 123_557_376  # The same weights as swa_128m.


def test_config_rules():
    with pytest.raises(ConfigError, match="model.window"):
        load_config(ROOT / "configs" / "landmark_128m.yaml", ["model.window=512"])
    with pytest.raises(ConfigError, match="block_len"):
        LandmarkConfig(block_len=1)
    with pytest.raises(ConfigError, match="model.landmark is set"):
        load_config(ROOT / "configs" / "swa_128m.yaml", ["model.landmark.block_len=32"])


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_logits_shapes_dtypes_finite(self):
        cfg = landmark_config()
        model = build_model(cfg, rngs=nnx.Rngs(0))
        tokens = _tokens(1, 2, 3 * (P - 1) + 2)  # The last block is padded.
        loss, aux = self.variant(lambda m, t: m.loss(t))(model, tokens)
        logits = self.variant(lambda m, t: m.logits(t))(model, tokens)
        chex.assert_shape(logits, (2, tokens.shape[1], cfg.vocab_size))
        chex.assert_type(logits, jnp.float32)
        chex.assert_tree_all_finite((loss, aux, logits))
        assert int(aux["tokens"]) == 2 * (tokens.shape[1] - 1)


def test_causality_by_gradient():
    """d h[pos] / d embeddings[q] is zero for every later inserted position q; the gradient
    reaches the first block, a landmark included, through the grouped softmax."""
    model = build_model(landmark_config(), rngs=nnx.Rngs(0))
    num_blocks = 5
    tokens = _tokens(4, 1, num_blocks * (P - 1))
    emb = model.embed_blocks(tokens)
    assert emb.shape[1] == num_blocks * P
    raw = 3 * (P - 1) + 4  # A raw token of block 3...
    pos = raw + raw // (P - 1)  # ...at this inserted position.
    probe = jax.random.normal(jax.random.key(5), (emb.shape[-1],))

    def probe_out(e):
        return jnp.dot(model.hidden_from_embeddings(e, tokens.shape[1])[0, raw], probe)

    grad = np.asarray(jax.jit(jax.grad(probe_out))(emb)[0])
    np.testing.assert_array_equal(grad[pos + 1 :], 0.0)
    assert np.abs(grad[pos]).sum() > 0
    assert np.abs(grad[P - 1]).sum() > 0, "no gradient to block 0's landmark"
    assert np.abs(grad[0]).sum() > 0, "no gradient to block 0"


def test_loss_covers_raw_tokens_only():
    """The loss is next-raw-token CE from raw slots; landmark slots' states are never scored.

    Recomputed here from the states of every inserted position: raw slot i predicts the next
    raw token (the last raw token of a block predicts the next block's first one).
    """
    model = build_model(landmark_config(), rngs=nnx.Rngs(0))
    tokens = _tokens(6, 2, 4 * (P - 1))
    loss, aux = model.loss(tokens)
    h_BxLxD = apply_stack(model.layers, model.embed_blocks(tokens), remat="none")
    logits_BxLxV = jnp.einsum(
        "bld,vd->blv", model.final_norm(h_BxLxD), model.embed.table[...]
    ).astype(jnp.float32)
    is_raw_L = np.arange(h_BxLxD.shape[1]) % P != P - 1
    raw_logits = logits_BxLxV[:, is_raw_L][:, :-1]  # Raw slots that have a next raw token.
    logp = jax.nn.log_softmax(raw_logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    assert int(aux["tokens"]) == nll.size
    np.testing.assert_allclose(float(loss), float(jnp.mean(nll)), rtol=1e-5)


def test_interpret_kernel_matches_xla_in_the_model():
    cfg = landmark_config(block_len=16)
    tokens = _tokens(7, 1, 2 * 15 + 3)
    model = build_model(cfg, rngs=nnx.Rngs(0))
    losses = []
    for backend in ("xla", "interpret"):
        m = build_model(dataclasses.replace(cfg, kernel_backend=backend), rngs=nnx.Rngs(0))
        nnx.update(m, nnx.state(model))
        losses.append(float(m.loss(tokens)[0]))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_flops_per_token():
    cfg = load_config(ROOT / "configs" / "landmark_128m.yaml")
    T = cfg.data.seq_len  # 16380 raw tokens = 260 blocks = 16640 positions
    m = cfg.model
    layer = 4 * 768 * 768 + 3 * 768 * 2048  # q, k, v, o and the SwiGLU
    per_position = 2 * 12 * layer + 4 * 768 * 12 * (16640 + 1) / 2
    expected = 3 * (per_position * 16640 / T + 2 * 768 * m.vocab_size)
    assert flops_per_token(m, T) == pytest.approx(expected, rel=1e-12)
    assert flops_per_token(m, T) == pytest.approx(1684104850.2857144, rel=1e-12)
