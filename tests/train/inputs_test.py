"""Input helpers: NIAH pad tails become ignored padding; batch splitting over processes."""

import numpy as np

from gca_jax.training import inputs


def test_mask_to_padding():
    batch = {
        "tokens": np.array([[5, 6, 7, 9]], np.int32),
        "loss_mask": np.array([[True, True, False, False]]),
    }
    out = inputs._mask_to_padding(batch)
    assert list(out) == ["tokens"]
    np.testing.assert_array_equal(out["tokens"], [[5, 6, -1, -1]])
    assert out["tokens"].dtype == np.int32


def test_local_batch_size_single_process():
    assert inputs.local_batch_size(8) == 8
