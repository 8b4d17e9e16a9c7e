"""Key/value caches that let one layer ``__call__`` serve training, segmented prefill and decode.

A sliding-window attention layer called with ``cache=None`` attends within its input (training,
full-sequence scoring). With a ``WindowCache`` it runs one *segment* of a longer sequence: the
previous W positions' keys/values precede the segment, so every query sees exactly the keys it
sees in the unsegmented forward, and the layer returns the segment's last W keys/values for the
next segment. With a ``RingCache`` and a ``DecodeStep`` it runs *one position* against a ring
buffer of N = W + 1 slots (position p in slot p mod N).

Caches of a layer stack carry a leading layer axis (``gca_jax.modeling.stack.apply_stack`` scans
over it); the ``DecodeStep`` is the same for every layer.
"""

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class WindowCache:
    """The previous W positions' keys and values of one layer (segmented prefill).

    Attributes:
      k_BxWxHkvxd: keys, oldest first; left-padded with zeros while fewer than W exist.
      v_BxWxHkvxd: values, same layout.
      has_history: False for the first segment (nothing precedes it). Static.
    """

    k_BxWxHkvxd: jax.Array
    v_BxWxHkvxd: jax.Array
    has_history: bool = struct.field(pytree_node=False, default=True)

    @classmethod
    def empty(cls, shape, dtype, *, layers: int) -> "WindowCache":
        """Zeros of (layers, B, W, Hkv, d), marked as having no history."""
        zeros = jnp.zeros((layers, *shape), dtype)
        return cls(zeros, zeros, has_history=False)

    def with_history(self) -> "WindowCache":
        """The same arrays, marked as holding real positions (after a first segment)."""
        return self.replace(has_history=True)


@struct.dataclass
class RingCache:
    """A ring buffer of N = W + 1 key/value slots of one layer (decode).

    Attributes:
      k_BxNxHkvxd: keys; slot n holds the latest position p with p % N == n.
      v_BxNxHkvxd: values.
    """

    k_BxNxHkvxd: jax.Array
    v_BxNxHkvxd: jax.Array


@struct.dataclass
class DecodeStep:
    """Where the position being decoded sits, shared by every layer of a decode step.

    Attributes:
      key_pos_BxN: position held by each ring slot after this step's write, -1 when empty.
      slot: int32 scalar, the ring slot this position writes.
      q_pos_B: int32 position of the query.
    """

    key_pos_BxN: jax.Array
    slot: jax.Array
    q_pos_B: jax.Array
