"""Per-dtype tolerances shared by the kernel tests (docs/architecture.md, "Testing").

Each entry is a relative tolerance: ``|actual - expected| <= tol * (|expected| + M)`` with
``M = max(max|expected|, 1)``: relative to each element and to the tensor's scale, so near-zero
elements (or a gradient that is zero in exact arithmetic) do not demand absolute precision that
rounding cannot give. Kernel tests draw O(1) inputs, so the floor of 1 is the natural scale of
their outputs and gradients. NaN and Inf never pass.
"""

import jax.numpy as jnp
import numpy as np

TOLERANCES = {
    # f32 kernels accumulate in f32 but in a different order than the reference.
    "float32": {"out": 1e-5, "grad": 5e-5, "rounding": 2**-24},
    # bf16 inputs and outputs: one bf16 rounding of the output (2^-8 ~ 4e-3) plus bf16 operands of
    # the second matmul; gradients go through two more bf16 roundings.
    "bfloat16": {"out": 1e-2, "grad": 2e-2, "rounding": 2**-8},
    "float16": {"out": 2e-3, "grad": 5e-3, "rounding": 2**-11},
}
# "rounding": half an ulp, for a result whose only error is its final rounding to the dtype (all
# arithmetic in float32, e.g. GCA's use_tf32_probs in interpret mode).


def tolerance(dtype, kind: str) -> float:
    """Tolerance for ``kind`` ("out", "grad" or "rounding") of a kernel run in ``dtype``."""
    return TOLERANCES[jnp.dtype(dtype).name][kind]


def assert_close(actual, expected, *, dtype, kind: str, name: str = "") -> None:
    """Asserts ``actual`` matches ``expected`` within the table's tolerance; NaN never passes."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values"
    tol = tolerance(dtype, kind)
    atol = tol * max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol, err_msg=name)
