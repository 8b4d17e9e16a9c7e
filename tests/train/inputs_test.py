"""Input helpers: NIAH pad tails become ignored padding; batch splitting over processes."""

import numpy as np

from gca_jax.training import inputs


def _niah_batch():
    return {
        "tokens": np.array([[5, 6, 7, 9]], np.int32),
        "loss_mask": np.array([[True, True, False, False]]),
        "answer_mask": np.array([[False, True, False, False]]),
    }


def test_niah_inputs_mask_the_pad_tail():
    out = inputs._niah_inputs(_niah_batch(), answer_weight=1.0)
    assert list(out) == ["tokens"]  # weight 1: the plain LM loss, no weights entry
    np.testing.assert_array_equal(out["tokens"], [[5, 6, -1, -1]])
    assert out["tokens"].dtype == np.int32


def test_niah_inputs_weigh_the_answer():
    out = inputs._niah_inputs(_niah_batch(), answer_weight=50.0)
    np.testing.assert_array_equal(out["weights"], [[1.0, 50.0, 1.0, 1.0]])
    assert out["weights"].dtype == np.float32


def test_local_batch_size_single_process():
    assert inputs.local_batch_size(8) == 8
