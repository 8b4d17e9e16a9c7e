"""Chunk memory for inference: appended chunk by chunk, K/V on the device or offloaded to host.

Landmarks (B, E, D) always stay on the device (retrieval scores every row). Chunk keys and
values (B, E, P', Hkv, d) are either device arrays, written in place by a donated update, or
host numpy arrays (``offload=True``), from which only retrieved rows travel to the device:

- per prefill segment, ``gather_union`` takes the union of the rows that the segment's chunks
  retrieved (per batch element), copies just those rows to the device and remaps ``idx`` into
  the gathered block, so GCA reads the same keys and values as from the whole memory;
- per decode chunk, ``take`` copies the K retrieved rows of the current retrieval.

All arrays are preallocated with a fixed capacity E (known up front: prompt plus generation
length), so the jitted steps see one shape. Rows at or after ``num_chunks`` hold zeros; they
can only be picked with weight 0 (the causal mask excludes them).
"""

import concurrent.futures
import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax.modeling.retrieval import ChunkMemory, Retrieval

_log = logging.getLogger(__name__)


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_rows(buf_BxEx, rows_BxCx, start):
    """buf[:, start:start + C] = rows, in place."""
    index = (0, start) + (0,) * (buf_BxEx.ndim - 2)
    return jax.lax.dynamic_update_slice(buf_BxEx, rows_BxCx.astype(buf_BxEx.dtype), index)


def compact_rows(memory: ChunkMemory, ret: Retrieval) -> tuple[ChunkMemory, Retrieval]:
    """On-device union gather: the rows ``ret.idx`` uses, and ``idx`` remapped into them.

    GCA then reads a block of U = min(C * K, E) rows instead of the whole memory: the same
    values (results are identical), and the kernel's operand stays small however long the
    context (at 16M tokens E * P' * H * d exceeds 2^31 elements, beyond int32 offsets).
    The union is padded with its largest row so it stays sorted for ``searchsorted``.
    """
    b, c, k = ret.idx.shape
    size = min(c * k, memory.keys.shape[1])

    def one(idx_CxK):
        flat = idx_CxK.reshape(-1)
        rows_U = jnp.unique(flat, size=size, fill_value=jnp.max(flat))
        return rows_U, jnp.searchsorted(rows_U, flat).reshape(c, k).astype(jnp.int32)

    rows_BxU, idx_BxCxK = jax.vmap(one)(ret.idx)
    sel_Bx1 = jnp.arange(b).reshape(b, 1)
    compact = ChunkMemory(
        landmarks=None,  # retrieved rows only: GCA reads keys and values
        keys=memory.keys[sel_Bx1, rows_BxU],
        values=memory.values[sel_Bx1, rows_BxU],
    )
    return compact, Retrieval(idx=idx_BxCxK, w=ret.w)


@jax.jit
def _take_rows(buf_BxEx, idx_BxK):
    """buf[b, idx[b, k]] -> (B, K, ...)."""
    b = buf_BxEx.shape[0]
    return buf_BxEx[jnp.arange(b).reshape(b, 1), idx_BxK]


@dataclasses.dataclass
class ChunkStore:
    """The growing chunk memory of a batch of sequences.

    Attributes:
      landmarks: (B, E, D) float32, on the device.
      keys: (B, E, P', Hkv, d) chunk keys, device jax array or host numpy array.
      values: like ``keys``.
      num_chunks: rows written so far.
      offload: whether keys and values live in host memory.
    """

    landmarks: jax.Array
    keys: jax.Array | np.ndarray
    values: jax.Array | np.ndarray
    num_chunks: int
    offload: bool

    @classmethod
    def allocate(
        cls,
        *,
        batch: int,
        capacity: int,
        dim: int,
        slots: int,
        kv_heads: int,
        head_dim: int,
        dtype,
        offload: bool,
    ) -> "ChunkStore":
        """Zero-filled memory of ``capacity`` rows."""
        shape = (batch, capacity, slots, kv_heads, head_dim)
        landmarks = jnp.zeros((batch, capacity, dim), jnp.float32)
        if offload:
            # np.zeros is lazily paged: host memory grows only as rows are written.
            keys, values = np.zeros(shape, dtype), np.zeros(shape, dtype)
        else:
            keys, values = jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
        _log.info(
            "chunk store: %d rows, K/V %.2f GB on %s",
            capacity,
            2 * keys.nbytes / 1e9,
            "host" if offload else "device",
        )
        return cls(landmarks, keys, values, 0, offload)

    @property
    def capacity(self) -> int:
        """E."""
        return self.landmarks.shape[1]

    def append(self, rows: ChunkMemory) -> None:
        """Writes C new rows (B, C, ...) after the existing ones."""
        c = rows.landmarks.shape[1]
        start = self.num_chunks
        if start + c > self.capacity:
            raise ValueError(
                f"chunk store full: {start} + {c} rows > capacity {self.capacity}; allocate more"
            )
        self.landmarks = _write_rows(self.landmarks, rows.landmarks, start)
        if self.offload:
            self.keys[:, start : start + c] = np.asarray(rows.keys)
            self.values[:, start : start + c] = np.asarray(rows.values)
        else:
            self.keys = _write_rows(self.keys, rows.keys, start)
            self.values = _write_rows(self.values, rows.values, start)
        self.num_chunks = start + c

    def device_memory(self) -> ChunkMemory:
        """The whole memory as device arrays (not for offloaded stores)."""
        assert not self.offload
        return ChunkMemory(landmarks=self.landmarks, keys=self.keys, values=self.values)

    def take(self, idx_BxK: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values (B, K, P', Hkv, d) of rows ``idx`` (B, K), on the device."""
        if not self.offload:
            return _take_rows(self.keys, idx_BxK), _take_rows(self.values, idx_BxK)
        idx = np.asarray(idx_BxK)
        rows_Bx1 = np.arange(idx.shape[0]).reshape(-1, 1)
        return jax.device_put(self.keys[rows_Bx1, idx]), jax.device_put(self.values[rows_Bx1, idx])

    def gather_union(self, idx_BxCxK: jax.Array) -> tuple[ChunkMemory, jax.Array]:
        """Only the rows that ``idx`` uses, on the device, and ``idx`` remapped into them.

        The gathered block has U rows per batch element, the union's size rounded up to a power
        of two (at least 256, at most min(C * K, E)), padded by repeating its first row: few
        distinct shapes, so the consumer compiles a handful of times at most.

        Returns:
          (memory with keys/values (B, U, P', Hkv, d) and no landmarks, remapped idx).
        """
        idx = np.asarray(idx_BxCxK)
        b, c, k = idx.shape
        uniq = [np.unique(idx[i], return_inverse=True) for i in range(b)]
        largest = max(u.size for u, _ in uniq)
        size = min(max(256, 1 << (largest - 1).bit_length()), c * k, self.capacity)
        rows_BxU = np.empty((b, size), np.int64)
        remapped = np.empty_like(idx)
        for i, (u, inverse) in enumerate(uniq):
            rows_BxU[i, : u.size] = u
            rows_BxU[i, u.size :] = u[0]
            remapped[i] = inverse.reshape(c, k)
        sel = np.arange(b).reshape(-1, 1)
        # Keys and values are gathered in two threads (numpy copies release the GIL).
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            keys, values = pool.map(
                lambda a: jax.device_put(a[sel, rows_BxU]), [self.keys, self.values]
            )
        memory = ChunkMemory(landmarks=None, keys=keys, values=values)
        return memory, jnp.asarray(remapped, jnp.int32)


@dataclasses.dataclass
class Carry:
    """What a prefill leaves for further segments or for decoding.

    Attributes:
      caches: per stack (lower, group 1, ...), a ``WindowCache`` of the last W positions'
        keys/values, each (layers, B, W, Hkv, d).
      store: the chunk memory.
      last_rows: per group, the retrieval row of the last chunk (B, 1, K): it serves the next.
      num_positions: landmark-inserted positions processed so far (= chunks * P).
    """

    caches: list
    store: ChunkStore
    last_rows: list
    num_positions: int
