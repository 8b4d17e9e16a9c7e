"""Train state: step, parameters (pure dict), optimiser state and the count of skipped steps.

Built abstractly first (``jax.eval_shape``), then shardings are derived from the parameters'
logical axes, then materialised by a jitted init whose outputs land already sharded: no
full-size weights ever sit on one device.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gca_jax import sharding as shard_lib
from gca_jax.config import ModelConfig
from gca_jax.modeling import build_model


@struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to resume training bit-exactly (besides the data)."""

    step: jax.Array  # int32 (): optimiser steps taken (skipped steps included)
    params: dict  # pure dict of float32 parameters, the layout of nnx.to_pure_dict
    opt_state: Any  # optax state over ``params``
    skipped: jax.Array  # int32 (): steps whose loss or gradients were not finite


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of a model: its graph definition and abstract parameter state."""

    graphdef: Any
    abstract_params: nnx.State  # nnx.Param variables with logical_axes metadata

    def merge(self, params: dict) -> nnx.Module:
        """Rebuilds the module from a pure-dict parameter tree (inside or outside jit)."""
        return nnx.merge(self.graphdef, params)


def _build_params(model_cfg: ModelConfig, seed: int) -> tuple[Any, nnx.State]:
    model = build_model(model_cfg, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert not jax.tree.leaves(rest), "models hold only nnx.Param state"
    return graphdef, params


def model_def(model_cfg: ModelConfig, seed: int = 0) -> ModelDef:
    """The graph definition and abstract parameters, without allocating any weight."""
    graphdef, params = nnx.eval_shape(lambda: _build_params(model_cfg, seed))
    return ModelDef(graphdef=graphdef, abstract_params=params)


def init_params(model_cfg: ModelConfig, seed: int) -> dict:
    """Initial parameters as a pure dict (call under jit)."""
    return nnx.to_pure_dict(_build_params(model_cfg, seed)[1])


def _init_state(model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation) -> TrainState:
    params = init_params(model_cfg, seed)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), skipped=zero)


def state_shardings(
    mdef: ModelDef, abstract_state: TrainState, tx: optax.GradientTransformation, mesh
) -> TrainState:
    """NamedShardings of every state leaf: optimiser moments follow their parameters."""
    param_sh = shard_lib.named(mesh, shard_lib.param_specs(mdef.abstract_params, mesh))
    replicated = NamedSharding(mesh, P())
    opt_sh = optax.tree_map_params(
        tx,
        lambda _, sh: sh,
        abstract_state.opt_state,
        param_sh,
        transform_non_params=lambda _: replicated,
    )
    return TrainState(step=replicated, params=param_sh, opt_state=opt_sh, skipped=replicated)


def abstract_state(
    model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation, mesh
) -> tuple[ModelDef, TrainState, TrainState]:
    """(model def, abstract state with shardings attached, shardings), allocating nothing."""
    mdef = model_def(model_cfg, seed)
    shapes = jax.eval_shape(lambda: _init_state(model_cfg, seed, tx))
    shardings = state_shardings(mdef, shapes, tx, mesh)
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    return mdef, abstract, shardings


def init_state(
    model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation, mesh
) -> tuple[ModelDef, TrainState, TrainState]:
    """(model def, materialised sharded state, shardings) from the abstract plan."""
    mdef, _, shardings = abstract_state(model_cfg, seed, tx, mesh)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: _init_state(model_cfg, seed, tx), out_shardings=shardings)()
    return mdef, state, shardings
