"""Block-Recurrent Transformer: parameter count, config rules, causality, the scan over blocks,
the gradient cut between segments, the segment-start dropouts and FLOPs."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gca_jax.config import BRTConfig, ConfigError, load_config
from gca_jax.modeling import build_model, count_params, flops_per_token
from tests.modeling.conftest import ROOT, tiny_model_config

L, S = 8, 4  # block_len and state_len of the test model


def brt_config(**brt):
    """A 3-layer float32 BRT (D=32, 4 heads over 2 K/V heads), recurrent layer 2."""
    section = dict(block_len=L, state_len=S, recurrent_layer=2, **brt)
    return tiny_model_config(
        model_type="brt",
        hidden_size=32,
        num_heads=4,
        num_kv_heads=2,
        mlp_hidden=64,
        num_layers=3,
        window=-1,
        brt=BRTConfig(**section),
    )


def _tokens(key, b, t):
    return jax.random.randint(jax.random.key(key), (b, t), 0, 256, jnp.int32)


def test_parameter_count_of_brt_128m():
    cfg = load_config(ROOT / "configs" / "brt_128m.yaml").model
    b = cfg.brt
    assert (b.block_len, b.state_len, b.recurrent_layer, b.gate, b.segment_blocks) == (
        512,
        512,
        4,
        "fixed",
        2,
    )
    V, D, F, n, s = 50265, 768, 2048, 12, 512
    layer = 2 * D + 4 * D * D + 3 * D * F  # two norms, q/k/v/o, SwiGLU
    recurrent_extra = (
        D * D  # o_proj reads [self-attention | state read]: 2D -> D
        + D * D  # read_q
        + 3 * D * D  # state q, k, v
        + 2 * D * D  # write_out, 2D -> D
        + D * D  # z
        + D  # state norm
        + D  # beta (the fixed gate)
        + 2 * s * D  # initial state and state position embeddings
    )
    expected = V * D + n * layer + recurrent_extra + D  # tied embedding, final norm
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    assert count_params(model) == expected
    lstm = dataclasses.replace(cfg, brt=dataclasses.replace(b, gate="lstm"))
    model = nnx.eval_shape(lambda: build_model(lstm, rngs=nnx.Rngs(0)))
    assert count_params(model) == expected - D + 2 * D * D + 2 * D  # two gates with biases


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.window=512"], "model.window=512: must be -1 for model_type='brt'"),
        (["model.brt.recurrent_layer=13"], "model.brt.recurrent_layer=13: must be in [1, model."),
        (["model.brt.recurrent_layer=0"], "model.brt.recurrent_layer=0: must be >= 1"),
        (["model.brt.block_len=0"], "model.brt.block_len=0: must be >= 1"),
        (["model.brt.segment_blocks=0"], "model.brt.segment_blocks=0: must be >= 1"),
        (["model.brt.state_dropout=1.0"], "model.brt.state_dropout=1.0: must be in [0, 1)"),
        (["model.brt.gate=gru"], "model.brt.gate='gru': must be one of ['fixed', 'lstm']"),
        (["block_len=64"], "key 'block_len' is ambiguous"),  # landmark has one too
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "brt_128m.yaml", override)
    assert message in str(e.value)


def test_brt_section_only_for_brt():
    with pytest.raises(ConfigError, match="model.brt is set"):
        load_config(ROOT / "configs" / "swa_128m.yaml", ["model.brt.state_len=8"])
    cfg = load_config(ROOT / "configs" / "brt_128m.yaml", ["state_len=64"]).model
    assert cfg.brt.state_len == 64 and cfg.token_multiple == 1


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_logits_shapes_dtypes_finite(self):
        model = build_model(brt_config(gate="lstm"), rngs=nnx.Rngs(0))
        tokens = _tokens(1, 2, L + 3)  # the last block is padded
        loss, aux = self.variant(lambda m, t: m.loss(t))(model, tokens)
        h, stats = self.variant(lambda m, t: m.hidden_states(t))(model, tokens)
        chex.assert_shape(h, (2, tokens.shape[1], 32))
        chex.assert_type(loss, jnp.float32)
        chex.assert_tree_all_finite((loss, aux, h))
        assert stats == {}
        assert int(aux["tokens"]) == 2 * (tokens.shape[1] - 1)


@jax.jit
def _probe_grad(model, x, t, probe):
    """d <h[0, t], probe> / d x, summed over D: (T,) magnitudes."""
    grad = jax.grad(lambda e: jnp.dot(model.hidden_from_embeddings(e)[0, t], probe))(x)
    return jnp.abs(grad[0]).sum(-1)


def test_causality_by_gradient():
    """d h[t] / d x[t'] is zero for every t' > t (the state written from t's own block is read
    only by later blocks), and nonzero back to the first block through the carry."""
    model = build_model(brt_config(segment_blocks=8), rngs=nnx.Rngs(0))
    x = model.embed(_tokens(2, 1, 3 * L))
    probe = jax.random.normal(jax.random.key(3), (x.shape[-1],))
    for t in (L - 1, 2 * L + 3):
        grad = np.asarray(_probe_grad(model, x, t, probe))
        np.testing.assert_array_equal(grad[t + 1 :], 0.0)
        assert grad[t] > 0 and grad[0] > 0, t


def test_scan_equals_an_unrolled_loop_over_blocks():
    cfg = dataclasses.replace(brt_config(segment_blocks=2), remat="full")  # remat per block
    model = build_model(cfg, rngs=nnx.Rngs(1))
    x = model.embed(_tokens(4, 2, 3 * L))
    scanned = jax.jit(lambda m, e: m.hidden_from_embeddings(e))(model, x)
    step = jax.jit(lambda m, c, e: m.block_step(c, e))
    carry, outs = model.initial_carry(2), []
    for i in range(3):
        h, carry = step(model, carry, x[:, i * L : (i + 1) * L])
        outs.append(h)
    np.testing.assert_allclose(scanned, jnp.concatenate(outs, 1), rtol=1e-5, atol=1e-5)


def test_gradient_stops_between_segments():
    """With segments of 2 blocks, block 3's output has a gradient to block 2 (same segment) and
    none to blocks 0-1: the carry is cut at block 2. (Without a cut the gradient reaches block
    0: test_causality_by_gradient.)"""
    model = build_model(brt_config(segment_blocks=2), rngs=nnx.Rngs(2))
    x = model.embed(_tokens(5, 1, 4 * L))
    probe = jax.random.normal(jax.random.key(6), (x.shape[-1],))
    per_block = np.asarray(_probe_grad(model, x, 3 * L + 2, probe)).reshape(4, L).sum(1)
    assert per_block[2] > 0 and per_block[3] > 0
    np.testing.assert_array_equal(per_block[:2], 0.0)


def test_segment_start_dropouts_reset_the_carry():
    """With dropout ~1 and a training key, each segment runs as from the initial carry: a
    repeated segment gives the same states; without a key (evaluation) nothing is dropped."""
    model = build_model(
        brt_config(segment_blocks=2, state_dropout=0.999, memory_dropout=0.999), rngs=nnx.Rngs(3)
    )
    x0 = model.embed(_tokens(7, 2, 2 * L))
    x = jnp.concatenate([x0, x0], axis=1)  # two identical segments
    hidden = jax.jit(lambda m, e, key: m.hidden_from_embeddings(e, key=key))
    dropped = np.asarray(hidden(model, x, jax.random.key(0)))
    np.testing.assert_allclose(dropped[:, 2 * L :], dropped[:, : 2 * L], rtol=1e-5, atol=1e-5)
    kept = np.asarray(hidden(model, x, None))
    np.testing.assert_allclose(kept[:, : 2 * L], dropped[:, : 2 * L], rtol=1e-6, atol=1e-6)
    assert not np.allclose(kept[:, 2 * L :], kept[:, : 2 * L], atol=1e-3)


def test_flops_per_token():
    cfg = load_config(ROOT / "configs" / "brt_128m.yaml").model
    T, D, V, Lb, Sn = 16384, 768, 50265, 512, 512
    layer = 4 * D * D + 3 * D * 2048
    context = (Lb + 1) / 2 + Lb * 31 / 32  # 32 blocks; the first has no previous block
    layers = 12 * (2 * layer + 4 * D * context)
    read = 2 * 2 * D * D + 4 * D * Sn
    write = Sn * (2 * 6 * D * D + 4 * D * (Sn + Lb)) / Lb  # q, k, v, write (2D -> D), z
    expected = 3 * (layers + read + write + 2 * D * V)
    assert flops_per_token(cfg, T) == pytest.approx(expected, rel=1e-12)
