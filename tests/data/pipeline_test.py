import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gca_jax.data import (
    TokenStream,
    check_tokenizer_matches,
    load_tokenizer,
    make_eval_dataset,
    make_train_dataset,
    read_manifest,
)


def _stream(docs) -> np.ndarray:
    """The byte-level token stream of `docs`: each document's bytes then EOT 256."""
    return np.concatenate([np.append(np.frombuffer(d.encode(), np.uint8), 256) for d in docs])


def _take(ds, n):
    it = iter(ds)
    return [next(it)["tokens"] for _ in range(n)]


def _contains(stream: np.ndarray, window: np.ndarray) -> list[int]:
    """Start offsets where `window` occurs in `stream`."""
    view = np.lib.stride_tricks.sliding_window_view(stream, window.shape[0])
    return list(np.flatnonzero((view == window).all(axis=1)))


def test_token_stream_reads_and_wraps(byte_corpus, docs):
    stream = TokenStream(byte_corpus)
    expected = _stream(docs)
    assert stream.num_tokens == expected.shape[0]
    np.testing.assert_array_equal(stream.read(0, stream.num_tokens), expected)
    np.testing.assert_array_equal(stream.read(1234, 5000), expected[1234:6234])
    wrapped = stream.read(stream.num_tokens - 10, 30)
    np.testing.assert_array_equal(wrapped, np.concatenate([expected[-10:], expected[:20]]))


def test_train_windows_are_stream_slices(byte_corpus, docs):
    expected = _stream(docs)
    (batch,) = _take(make_train_dataset(byte_corpus, seq_len=256, batch_size=4, seed=0), 1)
    assert batch.shape == (4, 256) and batch.dtype == np.int32
    for row in batch:
        assert _contains(expected, row)


def test_same_seed_same_batches(byte_corpus):
    a = _take(make_train_dataset(byte_corpus, seq_len=128, batch_size=2, seed=3), 3)
    b = _take(make_train_dataset(byte_corpus, seq_len=128, batch_size=2, seed=3), 3)
    c = _take(make_train_dataset(byte_corpus, seq_len=128, batch_size=2, seed=4), 3)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


def test_resume_from_iterator_state_gives_next_batch(byte_corpus):
    ds = make_train_dataset(byte_corpus, seq_len=128, batch_size=2, seed=0)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = next(it)["tokens"]
    fresh = iter(make_train_dataset(byte_corpus, seq_len=128, batch_size=2, seed=0))
    fresh.set_state(state)
    np.testing.assert_array_equal(next(fresh)["tokens"], expected)


def test_resume_through_orbax_checkpoint(byte_corpus, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    it = iter(make_train_dataset(byte_corpus, seq_len=64, batch_size=2, seed=1))
    next(it)
    next(it)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = next(it)["tokens"]
    restored = iter(make_train_dataset(byte_corpus, seq_len=64, batch_size=2, seed=1))
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    np.testing.assert_array_equal(next(restored)["tokens"], expected)
    mngr.close()


def test_process_sharding_is_disjoint_and_covers_single_process(byte_corpus):
    kw = dict(seq_len=96, seed=5)
    p0 = _take(make_train_dataset(byte_corpus, batch_size=3, process_count=2, **kw), 2)
    p1 = _take(
        make_train_dataset(byte_corpus, batch_size=3, process_index=1, process_count=2, **kw), 2
    )
    rows0 = {r.tobytes() for b in p0 for r in b}
    rows1 = {r.tobytes() for b in p1 for r in b}
    assert len(rows0) == 6 and len(rows1) == 6 and not rows0 & rows1
    # Step k of the two processes together is step k of one process with the global batch.
    single = _take(make_train_dataset(byte_corpus, batch_size=6, **kw), 2)
    for k in range(2):
        local = {r.tobytes() for r in p0[k]} | {r.tobytes() for r in p1[k]}
        assert local == {r.tobytes() for r in single[k]}


def test_align_to_doc_start(byte_corpus, docs):
    expected = _stream(docs)
    starts = set(np.concatenate([[0], np.cumsum([len(d.encode()) + 1 for d in docs])[:-1]]))
    ds = make_train_dataset(byte_corpus, seq_len=32, batch_size=8, seed=0, align_to_doc_start=True)
    (batch,) = _take(ds, 1)
    for row in batch:
        assert set(_contains(expected, row)) & starts


def test_eval_windows_are_consecutive(byte_corpus, docs):
    expected = _stream(docs)
    ds = make_eval_dataset(byte_corpus, seq_len=1000, batch_size=4)
    n = expected.shape[0] // 1000
    assert len(ds) == -(-n // 4)
    rows = np.concatenate([b["tokens"] for b in ds])
    np.testing.assert_array_equal(rows.reshape(-1), expected[: n * 1000])
    dropped = make_eval_dataset(byte_corpus, seq_len=1000, batch_size=4, drop_remainder=True)
    assert len(dropped) == n // 4
    assert len(make_eval_dataset(byte_corpus, seq_len=1000, batch_size=1, max_windows=3)) == 3


def test_tokenizer_mismatch_and_bad_arguments(byte_corpus, tiny_bpe_path, tmp_path):
    check_tokenizer_matches(byte_corpus, load_tokenizer("bytes").identity)
    check_tokenizer_matches(read_manifest(byte_corpus), load_tokenizer("bytes").identity)
    with pytest.raises(ValueError, match="different tokenizer.*landmark_id: corpus=258 vs"):
        check_tokenizer_matches(byte_corpus, load_tokenizer(tiny_bpe_path).identity)
    with pytest.raises(ValueError, match="holds no manifest.json"):
        make_train_dataset(tmp_path, seq_len=8, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="seq_len=0 must be a positive int"):
        make_train_dataset(byte_corpus, seq_len=0, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="process_index=2 must be in"):
        make_train_dataset(byte_corpus, seq_len=8, batch_size=1, seed=0, process_index=2)
    with pytest.raises(ValueError, match="num_tokens=.* < seq_len"):
        make_train_dataset(byte_corpus, seq_len=10**7, batch_size=1, seed=0)


_MP_SCRIPT = """
import sys
import numpy as np
from gca_jax.data import make_train_dataset

def main(corpus):
    from absl import flags
    flags.FLAGS.mark_as_parsed()  # grain reads absl flags outside absl.app.run.
    kw = dict(seq_len=64, batch_size=2, seed=7)
    it = iter(make_train_dataset(corpus, num_workers=2, **kw))
    got = [next(it)["tokens"] for _ in range(3)]
    ref = iter(make_train_dataset(corpus, **kw))
    want = [next(ref)["tokens"] for _ in range(3)]
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    print("same")

if __name__ == "__main__":  # grain's mp_prefetch spawns workers that re-import this file.
    main(sys.argv[1])
"""


@pytest.mark.slow
def test_multiprocess_prefetch_matches_in_process(byte_corpus, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "mp.py"
    script.write_text(_MP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), byte_corpus], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same" in proc.stdout


def test_datasets_refuse_other_tokenizer(byte_corpus, tiny_bpe_path):
    other = load_tokenizer(tiny_bpe_path).identity
    with pytest.raises(ValueError, match="different tokenizer"):
        make_train_dataset(byte_corpus, seq_len=8, batch_size=1, seed=0, tokenizer_identity=other)
    with pytest.raises(ValueError, match="different tokenizer"):
        make_eval_dataset(byte_corpus, seq_len=8, batch_size=1, tokenizer_identity=other)
    same = load_tokenizer("bytes").identity
    make_eval_dataset(byte_corpus, seq_len=8, batch_size=1, tokenizer_identity=same)


@given(start=st.integers(0, 10**6), length=st.integers(1, 5000))
def test_token_stream_read_matches_reference(byte_corpus, docs, start, length):
    expected = _stream(docs)
    idx = (start + np.arange(length)) % expected.shape[0]
    np.testing.assert_array_equal(TokenStream(byte_corpus).read(start, length), expected[idx])
