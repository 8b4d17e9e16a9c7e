"""A checkpoint written on one mesh resumes on another: state is restored into the new
shardings and training continues to the same parameters (issue: multi-GPU re-sharding)."""

import os
import shutil

import jax
import numpy as np
import pytest

from gca_jax.training import RunOptions, Trainer
from tests.train.conftest import tiny_config


def _train(corpus, out, mesh, fresh):
    cfg = tiny_config(f"data.corpus_dir={corpus}", *mesh)
    result = Trainer(cfg, RunOptions(output_dir=out, fresh=fresh)).run()
    return jax.tree.map(np.asarray, result.state.params), result


@pytest.mark.parametrize(
    "new_mesh",
    [
        ("mesh.data=8", "mesh.fsdp=1", "mesh.tensor=1"),
        ("mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"),
    ],
)
def test_checkpoint_from_one_mesh_resumes_on_another(repetitive_corpus, tmp_path, new_mesh):
    out = str(tmp_path / "run")
    straight, _ = _train(
        repetitive_corpus, out, ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), fresh=True
    )
    ckpt = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpt)) == ["4", "8"]
    shutil.rmtree(os.path.join(ckpt, "8"))  # as if the (2, 2, 2) run had died after step 4
    resumed, result = _train(repetitive_corpus, out, new_mesh, fresh=False)
    assert int(result.state.step) == 8
    leaves = jax.tree.leaves(result.state.params)
    assert all(len(x.sharding.device_set) == 8 for x in leaves)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        # Other meshes reduce in another order (bf16 compute), so equal up to float noise.
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)
