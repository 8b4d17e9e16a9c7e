"""configs/drt_1b.yaml: its exact size, and its FSDP plan on 8 (fake) devices, allocating nothing:
every large array of the train state is split 8 ways, so each device holds about 1/8."""

import dataclasses

import jax
import numpy as np

from gca_jax import sharding
from gca_jax.config import load_config
from gca_jax.training.optimizer import make_optimizer
from gca_jax.training.state import abstract_state


def test_drt_1b_state_is_split_eight_ways_under_fsdp():
    cfg = load_config("configs/drt_1b.yaml")
    mesh = sharding.make_mesh(dataclasses.replace(cfg.mesh), jax.devices()[:8])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    _, abstract, _ = abstract_state(cfg.model, 0, make_optimizer(cfg.train), mesh)
    params = jax.tree.leaves(abstract.params)
    assert sum(int(np.prod(p.shape)) for p in params) == 1_103_382_528
    total = per_device = 0
    for leaf in jax.tree.leaves(abstract):
        nbytes = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        shard = leaf.sharding.shard_shape(leaf.shape)
        total += nbytes
        per_device += int(np.prod(shard)) * leaf.dtype.itemsize
        if nbytes > 1 << 20:  # every array over 1 MiB is split across the 8 devices
            assert int(np.prod(shard)) * 8 == int(np.prod(leaf.shape)), leaf
    assert total > 13e9  # params + two AdamW moments in float32
    assert per_device < total / 8 * 1.01
