"""The parametrisation and checks that every kernel test module shares (docs/architecture.md).

Each op's tests run one grid, backend x named shape x dtype: ``"interpret"`` (the Pallas kernels in
the Pallas interpreter, on CPU) and ``"pallas"`` (on a GPU, under the ``gpu`` marker). Shapes too
large for the interpreter run on the GPU only. Forward and VJP (random cotangent) are compared with
the float32 reference through the one tolerance table, tests/kernels/tolerances.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

from tests.kernels.tolerances import assert_close

DTYPES = (jnp.float32, jnp.bfloat16)
H200 = AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="cuda")


def backends() -> list:
    """The kernel backends as pytest params: "interpret" everywhere, "pallas" on a GPU."""
    return [pytest.param("interpret"), pytest.param("pallas", marks=pytest.mark.gpu)]


def kernel_cases(shapes, *, gpu_only=()) -> list:
    """pytest params (backend, shape name, dtype) over backends x shapes x DTYPES.

    Args:
      shapes: the op's named shapes (their keys are used).
      gpu_only: names too large for the interpreter; they run with "pallas" only.
    """
    cases = []
    for backend in backends():
        (name,) = backend.values
        for shape in shapes:
            if name == "interpret" and shape in gpu_only:
                continue
            for dtype in DTYPES:
                cases.append(
                    pytest.param(
                        name,
                        shape,
                        dtype,
                        marks=backend.marks,
                        id=f"{name}-{shape}-{jnp.dtype(dtype).name}",
                    )
                )
    return cases


def normal(rng: np.random.Generator, shape, dtype) -> jax.Array:
    """Seeded standard-normal test data rounded to dtype.

    Drawn by numpy: jax.random compiles one program per new shape, 0.3-1.5 s each on a CPU, which
    would cost more than most kernel cases.
    """
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dtype=dtype)


def to_float32(xs):
    """Float32 copies of the floating arrays in a pytree; other arrays stay as they are."""
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, xs
    )


@functools.partial(jax.jit, static_argnums=0)
def _fwd_and_vjp(fn, primals, cotangent, consts):
    out, pullback = jax.vjp(lambda *primals: fn(*primals, *consts), *primals)
    return out, pullback(cotangent.astype(out.dtype))


def fwd_and_vjp(fn, primals, cotangent, consts=()):
    """Jitted ``(fn(*primals, *consts), vjp(cotangent))``: the output and one gradient per primal.

    consts are traced but not differentiated (indices, slopes). Compilations are cached by fn,
    so tests that pass the same function (see the ops' cached ``attend``) share them.
    """
    return _fwd_and_vjp(fn, tuple(primals), cotangent, tuple(consts))


def check_against_reference(
    kernel_fn, reference_fn, primals, cotangent, *, consts=(), dtype, names
):
    """Asserts that kernel_fn's forward and VJP match reference_fn's on float32 inputs.

    Args:
      kernel_fn: the op through a kernel backend, a function of primals and consts.
      reference_fn: the op through the XLA reference.
      primals: the differentiable inputs; the first is q (its dtype is the output's).
      cotangent: random cotangent of the output.
      consts: inputs that are not differentiated.
      dtype: the dtype the kernel runs in, which picks the tolerances.
      names: one name per primal's gradient, for messages.

    Returns:
      ``((out, grads), (ref_out, ref_grads))``.
    """
    out, grads = got = fwd_and_vjp(kernel_fn, primals, cotangent, consts)
    # The oracle sees the same (rounded) inputs, in float32.
    ref_out, ref_grads = want = fwd_and_vjp(
        reference_fn, to_float32(primals), to_float32(cotangent), consts
    )
    assert out.dtype == primals[0].dtype and out.shape == ref_out.shape
    assert_close(out, ref_out, dtype=dtype, kind="out", name="out")
    for name, g, rg, x in zip(names, grads, ref_grads, primals, strict=True):
        assert g.dtype == x.dtype and g.shape == x.shape, name
        assert_close(g, rg, dtype=dtype, kind="grad", name=name)
    return got, want


def check_vmap_and_remat(attend, args, cotangent, *, backend, names):
    """jit(vmap(grad(remat(op)))) through a kernel backend equals the same through XLA.

    Args:
      attend: ``attend(backend)`` is the op as a function of args.
      args: float32 inputs with a leading vmapped axis; the first len(names) are differentiated.
      cotangent: the output's cotangent, with the same leading axis.
      backend: the kernel backend.
      names: one name per differentiated arg.
    """

    def grads(backend):
        def loss(*args_and_ct):
            *args, ct = args_and_ct
            return jnp.sum(jax.checkpoint(attend(backend))(*args) * ct)

        grad = jax.grad(loss, argnums=tuple(range(len(names))))
        return jax.jit(jax.vmap(grad))(*args, cotangent)

    for name, g, rg in zip(names, grads(backend), grads("xla"), strict=True):
        assert_close(g, rg, dtype=jnp.float32, kind="grad", name=f"vmap(remat) {name}")


def check_shard_map_grad(attend, args, cotangent, *, mesh, in_specs, out_specs, names):
    """Gradients through ``jax.shard_map(attend)`` equal the unsharded ones (float32).

    Each device runs the kernel on its local batch and heads; the first len(names) args are
    differentiated.
    """
    sharded = jax.shard_map(
        attend, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )

    def value_and_grads(fn):
        loss = lambda *args: jnp.sum(fn(*args) * cotangent)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(names)))))(*args)

    (loss, grads), (ref_loss, ref_grads) = value_and_grads(sharded), value_and_grads(attend)
    assert_close(loss, ref_loss, dtype=jnp.float32, kind="out", name="loss")
    for name, g, rg in zip(names, grads, ref_grads, strict=True):
        assert_close(g, rg, dtype=jnp.float32, kind="grad", name=f"shard_map {name}")


def cuda_lowering(fn, *args) -> str:
    """StableHLO text of ``jit(fn)`` lowered for an abstract H200: runs on CPU-only machines."""
    mesh = AbstractMesh((), (), (), abstract_device=H200)  # Empty mesh: docs/stack-notes.md §2.
    with use_abstract_mesh(mesh):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def assert_triton_kernels(text: str, names) -> None:
    """The lowered text holds exactly one Triton call per name, each named by pallas_call."""
    assert text.count("xla.gpu.triton") == len(names), (text.count("xla.gpu.triton"), names)
    for name in names:
        assert f'name = "{name}"' in text, name
