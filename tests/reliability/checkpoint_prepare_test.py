"""Checkpointer.prepare: a save after it compiles nothing (docs/reliability.md, "Checkpoints")."""

import jax.numpy as jnp
import numpy as np

from gca_jax import checkpoint as ckpt_lib


def test_prepare_compiles_the_save_checksum_so_a_save_compiles_nothing(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32), "step": jnp.int32(7)}
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=2, use_async=False)
    before = ckpt_lib._digest_arrays._cache_size()
    ckpt.prepare(state)
    compiled = ckpt_lib._digest_arrays._cache_size()
    assert compiled == before + 1
    ckpt.save(1, state, None, {"k": 1})
    ckpt.close()
    assert ckpt_lib._digest_arrays._cache_size() == compiled
    assert ckpt.all_steps() == [1]
