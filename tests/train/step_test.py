"""Train step properties: skipped non-finite steps (loss, gradient or new state), grad
accumulation == big batch, sharded (2, 2, 2) step == single-device step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import sharding as shard_lib
from gca_jax.config import MeshConfig
from gca_jax.training import init_state, lr_schedule, make_optimizer, make_train_step
from tests.train.conftest import tiny_config


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 256, (cfg.data.batch_size, cfg.data.seq_len), np.int32)}


@functools.cache
def _compiled(cfg, mesh):
    """Jitted step, initial state and shardings; cached so tests share compilations."""
    tx = make_optimizer(cfg.train)
    mdef, init, shardings = init_state(cfg.model, cfg.train.seed, tx, mesh)
    step = jax.jit(
        make_train_step(mdef, tx, lr_schedule(cfg.train), cfg.train),
        in_shardings=(shardings, {"tokens": shard_lib.batch_sharding(mesh)}),
        out_shardings=(shardings, None),
    )
    return step, init


def _one_step(cfg, mesh, state=None):
    step, init = _compiled(cfg, mesh)
    with jax.set_mesh(mesh):
        batch = shard_lib.global_batch(_batch(cfg), mesh)
        return init, *step(init if state is None else state, batch)


def _mesh(data, fsdp, tensor, n):
    return shard_lib.make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[:n])


SWA = (
    "model.model_type=swa_lm",
    "model.retrieval=null",
    "model.dtype=float32",
    "train.warmup_steps=0",
)


def test_non_finite_step_is_skipped_and_counted():
    cfg, mesh = tiny_config(*SWA), _mesh(1, 1, 1, 1)
    _, state = _compiled(cfg, mesh)
    table = state.params["embed"]["table"]
    bad = state.replace(params={**state.params, "embed": {"table": table.at[3, 0].set(jnp.nan)}})
    bad_copy = jax.tree.map(np.asarray, bad)
    _, new, metrics = _one_step(cfg, mesh, state=bad)
    assert not bool(metrics["is_finite"])
    assert int(new.step) == 1 and int(new.skipped) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(bad_copy.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)  # NaN == NaN here: untouched
    for a, b in zip(
        jax.tree.leaves(new.opt_state), jax.tree.leaves(bad_copy.opt_state), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_step_that_would_make_the_state_non_finite_is_skipped():
    # A NaN Adam moment (a damaged checkpoint once restored unnoticed): the loss and gradients
    # stay finite, the update does not; the step producing the NaN weights is the one skipped.
    cfg, mesh = tiny_config(*SWA), _mesh(1, 1, 1, 1)
    _, state = _compiled(cfg, mesh)
    adam = state.opt_state[1]
    mu = {**adam.mu, "embed": {"table": adam.mu["embed"]["table"].at[3, 0].set(jnp.nan)}}
    opt_state = (state.opt_state[0], adam._replace(mu=mu), *state.opt_state[2:])
    bad = state.replace(opt_state=opt_state)
    _, new, metrics = _one_step(cfg, mesh, state=bad)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert not bool(metrics["is_finite"])
    assert int(new.step) == 1 and int(new.skipped) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_grad_accumulation_equals_big_batch():
    # swa_lm: no Gumbel noise, so micro-batches see exactly the big batch's computation.
    mesh = _mesh(1, 1, 1, 1)
    _, big, m_big = _one_step(tiny_config(*SWA), mesh)
    _, acc, m_acc = _one_step(tiny_config(*SWA, "train.grad_accum=4"), mesh)
    np.testing.assert_allclose(float(m_acc["loss"]), float(m_big["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m_acc["grad_norm"]), float(m_big["grad_norm"]), rtol=1e-5)
    # Adam's first step is ~lr * sign(g): near-zero gradient entries amplify rounding, so
    # parameters are compared to 1e-5 absolute (lr = 3e-3).
    for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(big.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_loss_weights_reach_the_step():
    cfg = tiny_config(*SWA)
    tx = make_optimizer(cfg.train)
    mdef, init, _ = init_state(cfg.model, cfg.train.seed, tx, _mesh(1, 1, 1, 1))
    step = jax.jit(make_train_step(mdef, tx, lr_schedule(cfg.train), cfg.train))
    batch = _batch(cfg)
    _, plain = step(init, batch)
    _, ones = step(init, {**batch, "weights": np.ones(batch["tokens"].shape, np.float32)})
    np.testing.assert_allclose(float(ones["loss"]), float(plain["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(ones["grad_norm"]), float(plain["grad_norm"]), rtol=1e-5)
    heavy = np.ones(batch["tokens"].shape, np.float32)
    heavy[::3, -8:] = 100.0  # rows 0, 3, 6: micro-batches of unequal total weight
    _, weighted = step(init, {**batch, "weights": heavy})
    expected, _ = mdef.merge(init.params).loss(jnp.asarray(batch["tokens"]), weights_BxT=heavy)
    np.testing.assert_allclose(float(weighted["loss"]), float(expected), rtol=1e-5)
    assert float(weighted["tokens"]) == float(plain["tokens"])  # real tokens, not weights
    # Accumulated micro-batches give the big batch's weighted loss: normalised by all weights.
    acc_cfg = tiny_config(*SWA, "train.grad_accum=4")
    acc_step = jax.jit(make_train_step(mdef, tx, lr_schedule(acc_cfg.train), acc_cfg.train))
    _, acc = acc_step(init, {**batch, "weights": heavy})
    np.testing.assert_allclose(float(acc["loss"]), float(weighted["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(acc["grad_norm"]), float(weighted["grad_norm"]), rtol=1e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")
def test_sharded_step_equals_single_device_step():
    cfg = tiny_config("model.dtype=float32", "train.warmup_steps=0")
    init1, one, m1 = _one_step(cfg, _mesh(1, 1, 1, 1))
    init8, eight, m8 = _one_step(cfg, _mesh(2, 2, 2, 8))
    table = eight.params["embed"]["table"]
    assert table.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")  # vocab 259: odd
    wq = eight.params["lower"]["attn"]["q_proj"]["kernel"]
    assert wq.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    for a, b in zip(jax.tree.leaves(init8.params), jax.tree.leaves(init1.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("loss", "grad_norm", "ret_top_weight_g0", "ret_distance_g1"):
        np.testing.assert_allclose(float(m8[key]), float(m1[key]), rtol=2e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(eight.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_pinned_first_step_of_tiny_drt():
    """Regression pin. Update the numbers only for an intended change of the model, its init, the
    loss or the optimiser (say which in the commit); an unexplained change is a bug."""
    cfg = tiny_config("model.dtype=float32", "train.warmup_steps=0")
    _, _, metrics = _one_step(cfg, _mesh(1, 1, 1, 1))
    got = [float(metrics[k]) for k in ("loss", "grad_norm", "ret_top_weight_g0")]
    # loss ~ ln(259) = 5.557 at init; grad norm; mean top retrieval weight of group 0.
    np.testing.assert_allclose(got, [5.569814, 0.466248, 0.510851], rtol=1e-4)


@pytest.mark.parametrize(
    "model_type,mesh",
    [("drt", "data=8,fsdp=1"), ("swa_lm", "data=8,fsdp=1"), ("drt", "data=2,fsdp=4")],
)
def test_sharded_step_moves_no_activations(model_type, mesh):
    """With the batch sharded (data parallel or FSDP) only weights, gradients and tiny retrieval
    scores cross devices. Activations gathered across the batch axes mean devices compute the
    whole batch (the blocked loss once flattened B x T and did that) or shuttle the chunk memory
    instead of a weight (the shared chunk K/V projection under FSDP did that)."""
    import re

    from gca_jax import sharding as shard_lib
    from gca_jax.modeling.loss import VOCAB_ALIGN
    from gca_jax.training import abstract_state, make_optimizer
    from gca_jax.training.optimizer import lr_schedule
    from gca_jax.training.step import make_train_step

    data, fsdp = (int(kv.split("=")[1]) for kv in mesh.split(","))
    cfg = tiny_config(
        f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"model.model_type={model_type}",
        "model.kernel_backend=xla", "model.loss_block=256",
        *(["model.retrieval=null"] if model_type == "swa_lm" else []),
    )  # fmt: skip
    mesh = shard_lib.make_mesh(cfg.mesh)
    tx = make_optimizer(cfg.train)
    mdef, abstract, shardings = abstract_state(cfg.model, cfg.train.seed, tx, mesh)
    batch_sh = {"tokens": shard_lib.batch_sharding(mesh)}
    fn = jax.jit(
        make_train_step(mdef, tx, lr_schedule(cfg.train), cfg.train),
        in_shardings=(shardings, batch_sh),
        out_shardings=(shardings, None),
    )
    batch = {"tokens": jax.ShapeDtypeStruct((8, cfg.data.seq_len), jnp.int32)}
    with jax.set_mesh(mesh):
        hlo = fn.lower(abstract, batch).compile().as_text()
    moved = re.findall(r"= [a-z0-9]+\[([0-9,]*)\]\S* (?:all-gather|collective-permute)\(", hlo)
    shapes = {tuple(int(x) for x in dims.split(",") if x) for dims in moved}
    weights = {tuple(x.shape[-2:]) for x in jax.tree.leaves(abstract.params)}  # FSDP gathers
    vocab = -(-cfg.model.vocab_size // VOCAB_ALIGN) * VOCAB_ALIGN
    weights.add((vocab, cfg.model.hidden_size))  # the embedding table, padded inside the loss
    one_sequence = cfg.data.seq_len * cfg.model.hidden_size
    activations = [s for s in shapes - weights if np.prod(s) >= one_sequence]
    assert not activations, activations
