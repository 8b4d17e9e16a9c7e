"""Meshes, logical-axis partition rules and shard_map wrappers for the attention kernels.

The one place that knows about mesh axes. Parameters carry logical axis names (``logical_axes``
metadata, see ``gca_jax.modeling.layers``); ``LOGICAL_RULES`` maps each name to a mesh axis.
Stacked layers (scan) have one extra leading axis that is always replicated.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters sharded along
``embed``), ``tensor`` (heads / MLP hidden / vocab split across devices). Batches are sharded over
``("data", "fsdp")``.

The kernels (``kernels.swa``, ``kernels.gca``) are opaque to the partitioner (Pallas calls), so
they run inside ``jax.shard_map``: batch over ``("data", "fsdp")``, heads over ``tensor``, with
no collectives inside. With no mesh set (or a mesh of one device) the wrappers call the kernel
directly.
"""

import logging
import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gca_jax.config import MeshConfig
from kernels.gca import gca_attention as _gca_attention
from kernels.gca import gca_decode as _gca_decode
from kernels.landmark import landmark_attention as _landmark_attention
from kernels.swa import sliding_window_attention as _sliding_window_attention
from kernels.swa import sliding_window_decode as _sliding_window_decode

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"

# logical axis name -> mesh axis (None = replicated).
LOGICAL_RULES: dict[str, str | None] = {
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "vocab": "tensor",
    "norm": None,
    "layers": None,
}


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Resolves the (data, fsdp, tensor) sizes, filling a -1 axis with the remaining devices.

    Raises:
      ValueError: the sizes do not multiply to ``num_devices``; the message names mesh.*.
    """
    sizes = {"data": cfg.data, "fsdp": cfg.fsdp, "tensor": cfg.tensor}
    fixed = math.prod(s for s in sizes.values() if s != -1)
    for name, size in sizes.items():
        if size == -1:
            if num_devices % fixed:
                raise ValueError(
                    f"mesh.{name}=-1: the other axes ({fixed} devices) do not divide "
                    f"the {num_devices} devices"
                )
            sizes[name] = num_devices // fixed
    total = math.prod(sizes.values())
    if total != num_devices:
        raise ValueError(
            f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = "
            f"{total} devices, but {num_devices} are available; set one of mesh.data/fsdp/tensor "
            "to -1 or make the product match"
        )
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Builds the (data, fsdp, tensor) mesh with Auto axes (classic GSPMD propagation)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def batch_shards(mesh: jax.sharding.Mesh) -> int:
    """How many ways a batch is split: the product of the mesh's batch axes (data x fsdp)."""
    return _axis_size(mesh, BATCH_AXES)


def _axis_size(mesh, axis: str | tuple[str, ...] | None) -> int:
    if axis is None:
        return 1
    names = (axis,) if isinstance(axis, str) else axis
    return math.prod(mesh.shape[n] for n in names)


def logical_to_spec(
    logical_axes: Sequence[str | None], shape: Sequence[int], mesh: jax.sharding.Mesh
) -> P:
    """PartitionSpec of one parameter from its logical axes.

    Leading dims beyond ``logical_axes`` (stacked layers) are replicated. A dimension that the
    mesh axis does not divide (e.g. vocab 259 over 2 devices) is replicated instead, with a log
    line, so that odd sizes still run.

    Raises:
      KeyError: a logical axis name without a rule.
    """
    extra = len(shape) - len(logical_axes)
    assert extra >= 0, (logical_axes, shape)
    spec: list[str | None] = [None] * extra
    for name, dim in zip(logical_axes, shape[extra:], strict=True):
        if name is not None and name not in LOGICAL_RULES:
            raise KeyError(f"no sharding rule for logical axis {name!r}; add it to LOGICAL_RULES")
        axis = None if name is None else LOGICAL_RULES[name]
        if axis is not None and dim % _axis_size(mesh, axis):
            logger.info(
                "replicating logical axis %r of size %d: mesh axis %r has %d devices",
                name,
                dim,
                axis,
                _axis_size(mesh, axis),
            )
            axis = None
        spec.append(axis)
    return P(*spec)


def param_specs(params: nnx.State, mesh: jax.sharding.Mesh) -> dict:
    """Pure-dict tree of PartitionSpecs for an (abstract) ``nnx.State`` of Params."""

    def spec(var: nnx.Variable) -> P:
        axes = var.get_metadata().get("logical_axes")
        if axes is None:
            raise KeyError(f"parameter of shape {var.shape} has no logical_axes metadata")
        return logical_to_spec(axes, var.shape, mesh)

    specs = jax.tree.map(spec, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(specs) if isinstance(specs, nnx.State) else specs


def named(mesh: jax.sharding.Mesh, specs):
    """Maps a tree of PartitionSpecs to NamedShardings."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of a (B, T) batch: B over (data, fsdp)."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles the process-local batch slices into global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def constrain_batch(x: jax.Array) -> jax.Array:
    """``x`` with its leading (batch) axis sharded over the batch axes of the current mesh.

    A hint where XLA would otherwise re-shard activations rather than gather a weight; a no-op
    outside a mesh or when the axis does not divide.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    if x.shape[0] % _axis_size(mesh, BATCH_AXES):
        return x
    spec = P(BATCH_AXES, *([P.UNCONSTRAINED] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, spec)


# -- kernel wrappers ---------------------------------------------------------------------------


def _kernel_mesh(batch: int, heads: Sequence[int]):
    """The current mesh and the (batch, head) axes to split, or None to call the kernel as is."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or not set(MESH_AXES) <= set(mesh.axis_names):
        return None
    batch_axes: tuple[str, ...] | None = BATCH_AXES
    if batch % _axis_size(mesh, BATCH_AXES):
        logger.info("kernel batch %d not divisible by %s: replicated", batch, BATCH_AXES)
        batch_axes = None
    head_axis: str | None = HEAD_AXIS
    if any(h % mesh.shape[HEAD_AXIS] for h in heads):
        logger.info("kernel heads %s not divisible by %r: replicated", heads, HEAD_AXIS)
        head_axis = None
    if batch_axes is None and head_axis is None:
        return None
    return mesh, batch_axes, head_axis


def sliding_window_attention(q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, *, window, alibi_slopes, backend):
    """``kernels.swa.sliding_window_attention`` under shard_map (batch and heads split)."""
    kw = dict(window=window, backend=backend)
    plan = _kernel_mesh(q_BxTxHxd.shape[0], (q_BxTxHxd.shape[2], k_BxTxHkvxd.shape[2]))
    if plan is None:
        return _sliding_window_attention(
            q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, alibi_slopes=alibi_slopes, **kw
        )
    mesh, b, h = plan
    x_spec = P(b, None, h, None)

    def local(q, k, v, slopes):
        return _sliding_window_attention(q, k, v, alibi_slopes=slopes, **kw)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(x_spec, x_spec, x_spec, P(h)),
        out_specs=x_spec,
        check_vma=False,  # needed around pallas_call (docs/stack-notes.md §4)
    )(q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, alibi_slopes)


def gca_attention(q_BxCxPxHxd, keys_BxExSxHkvxd, values_BxExSxHkvxd, idx_BxCxK, w_BxCxK, *, scale,
                  backend):  # fmt: skip
    """``kernels.gca.gca_attention`` under shard_map (batch and heads split, no collectives)."""
    kw = dict(scale=scale, backend=backend)
    plan = _kernel_mesh(q_BxCxPxHxd.shape[0], (q_BxCxPxHxd.shape[3], keys_BxExSxHkvxd.shape[3]))
    args = (q_BxCxPxHxd, keys_BxExSxHkvxd, values_BxExSxHkvxd, idx_BxCxK, w_BxCxK)
    if plan is None:
        return _gca_attention(*args, **kw)
    mesh, b, h = plan
    x_spec, r_spec = P(b, None, None, h, None), P(b, None, None)
    return jax.shard_map(
        lambda *a: _gca_attention(*a, **kw),
        mesh=mesh,
        in_specs=(x_spec, x_spec, x_spec, r_spec, r_spec),
        out_specs=x_spec,
        check_vma=False,  # needed around pallas_call (docs/stack-notes.md §4)
    )(*args)


def gca_decode(q_BxNxHxd, keys_BxKxSxHkvxd, values_BxKxSxHkvxd, w_BxK, *, scale, backend):
    """``kernels.gca.gca_decode`` under shard_map (batch and heads split, no collectives)."""
    kw = dict(scale=scale, backend=backend)
    plan = _kernel_mesh(q_BxNxHxd.shape[0], (q_BxNxHxd.shape[2], keys_BxKxSxHkvxd.shape[3]))
    args = (q_BxNxHxd, keys_BxKxSxHkvxd, values_BxKxSxHkvxd, w_BxK)
    if plan is None:
        return _gca_decode(*args, **kw)
    mesh, b, h = plan
    q_spec, kv_spec = P(b, None, h, None), P(b, None, None, h, None)
    return jax.shard_map(
        lambda *a: _gca_decode(*a, **kw),
        mesh=mesh,
        in_specs=(q_spec, kv_spec, kv_spec, P(b, None)),
        out_specs=q_spec,
        check_vma=False,  # needed around pallas_call (docs/stack-notes.md §4)
    )(*args)


def sliding_window_decode(
    q_BxHxd, k_BxNxHkvxd, v_BxNxHkvxd, key_pos_BxN, q_pos_B, *, window, alibi_slopes
):
    """``kernels.swa.sliding_window_decode`` under shard_map (batch and heads split)."""
    kw = dict(window=window)
    plan = _kernel_mesh(q_BxHxd.shape[0], (q_BxHxd.shape[1], k_BxNxHkvxd.shape[2]))
    args = (q_BxHxd, k_BxNxHkvxd, v_BxNxHkvxd, key_pos_BxN, q_pos_B)
    if plan is None:
        return _sliding_window_decode(*args, alibi_slopes=alibi_slopes, **kw)
    mesh, b, h = plan
    kv_spec = P(b, None, h, None)

    def local(q, k, v, key_pos, q_pos, slopes):
        return _sliding_window_decode(q, k, v, key_pos, q_pos, alibi_slopes=slopes, **kw)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(b, h, None), kv_spec, kv_spec, P(b, None), P(b), P(h)),
        out_specs=P(b, h, None),
        check_vma=False,
    )(*args, alibi_slopes)


def landmark_attention(q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd, *, block_len, backend):
    """``kernels.landmark.landmark_attention`` under shard_map (batch and heads split)."""
    kw = dict(block_len=block_len, backend=backend)
    plan = _kernel_mesh(q_BxTxHxd.shape[0], (q_BxTxHxd.shape[2], k_BxTxHkvxd.shape[2]))
    args = (q_BxTxHxd, k_BxTxHkvxd, v_BxTxHkvxd)
    if plan is None:
        return _landmark_attention(*args, **kw)
    mesh, b, h = plan
    x_spec = P(b, None, h, None)
    return jax.shard_map(
        lambda *a: _landmark_attention(*a, **kw),
        mesh=mesh,
        in_specs=(x_spec, x_spec, x_spec),
        out_specs=x_spec,
        check_vma=False,  # needed around pallas_call (docs/stack-notes.md §4)
    )(*args)
