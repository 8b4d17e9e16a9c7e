"""Chunk store: union gathers (device and host) feed GCA exactly what the whole memory would."""

import jax
import numpy as np
import pytest

from gca_jax.inference.memory import ChunkStore, compact_rows
from gca_jax.modeling.retrieval import ChunkMemory, Retrieval
from kernels.gca import gca_attention

B, E, S, H, D, C, K = 2, 40, 4, 2, 8, 5, 3


@pytest.fixture(scope="module")
def memory_and_ret():
    ks = jax.random.split(jax.random.key(0), 5)
    keys = jax.random.normal(ks[0], (B, E, S, H, D))
    values = jax.random.normal(ks[1], (B, E, S, H, D))
    landmarks = jax.random.normal(ks[2], (B, E, H * D))
    idx = jax.random.randint(ks[3], (B, C, K), 0, E, dtype=np.int32)
    w = jax.nn.softmax(jax.random.normal(ks[4], (B, C, K)), axis=-1)
    return ChunkMemory(landmarks, keys, values), Retrieval(idx, w)


def _gca(memory, ret):
    q = jax.random.normal(jax.random.key(1), (B, C, 6, H, D))
    return np.asarray(gca_attention(q, memory.keys, memory.values, ret.idx, ret.w, scale=0.3))


def test_compact_rows_gives_identical_gca(memory_and_ret):
    memory, ret = memory_and_ret
    small, remapped = compact_rows(memory, ret)
    assert small.keys.shape == (B, C * K, S, H, D)
    np.testing.assert_array_equal(_gca(small, remapped), _gca(memory, ret))


def test_host_gather_union_gives_identical_gca(memory_and_ret):
    memory, ret = memory_and_ret
    store = ChunkStore.allocate(
        batch=B,
        capacity=E,
        dim=H * D,
        slots=S,
        kv_heads=H,
        head_dim=D,
        dtype=np.float32,
        offload=True,
    )
    store.append(memory)
    assert isinstance(store.keys, np.ndarray) and store.num_chunks == E
    small, idx = store.gather_union(ret.idx)
    np.testing.assert_array_equal(_gca(small, Retrieval(idx, ret.w)), _gca(memory, ret))
    keys, _ = store.take(ret.idx[:, 0])
    np.testing.assert_array_equal(
        keys, np.asarray(memory.keys)[np.arange(B)[:, None], ret.idx[:, 0]]
    )
    with pytest.raises(ValueError, match="chunk store full"):
        store.append(memory)
