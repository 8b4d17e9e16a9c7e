import numpy as np
import pytest

from gca_jax.data import load_tokenizer, niah


@pytest.fixture(params=["bytes", "bpe"])
def tok(request, tiny_bpe_path):
    return load_tokenizer("bytes" if request.param == "bytes" else tiny_bpe_path)


def _haystack(length, tok, seed=0):
    """A haystack of ordinary ids that never spell a template."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.asarray(tok.encode("zzz yyy xxx qqq www"), np.int32), size=length)


def _find(seq, sub) -> list[int]:
    view = np.lib.stride_tricks.sliding_window_view(seq, sub.shape[0])
    return list(np.flatnonzero((view == sub).all(axis=1)))


@pytest.mark.parametrize("chunk_size", [63, 64])
@pytest.mark.parametrize("task", niah.TASKS)
def test_answer_at_slot_one_of_last_chunk(tok, task, chunk_size):
    length = chunk_size * 48
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    s = niah.make_niah_sample(
        _haystack(length, tok),
        task=task,
        templates=tpl,
        chunk_size=chunk_size,
        rng=np.random.default_rng(11),
    )
    tokens, start, n = s["tokens"], s["answer_start"], s["answer_len"]
    assert tokens.shape == (length,) and tokens.dtype == np.int32
    # Slot 1 of the last chunk; the question's last id sits in slot 0.
    assert start // chunk_size == length // chunk_size - 1 and start % chunk_size == 1
    expected_final = start if task == "single" else start + n - 1
    assert s["final_pos"] == expected_final and s["target"] == tokens[expected_final]
    assert (tokens[start + n :] == tok.pad_id).all()
    assert s["loss_mask"].sum() == start + n and not s["loss_mask"][start + n :].any()
    answer = tokens[start : start + n]
    for needle in _expected_needles(task, tokens, start, n, tpl):
        found = _find(tokens[:start], needle)
        assert len(found) == 1 and found[0] + needle.shape[0] <= start - chunk_size
    assert answer.shape == (n,)


def _expected_needles(task, tokens, start, n, tpl) -> list[np.ndarray]:
    """Rebuild the query from the sample, check it, and return the needles it implies."""
    answer = tokens[start : start + n]
    if task == "single":
        query = tpl.cat("|What is the passkey? The passkey is", answer)
        needles = [tpl.cat("|", "The passkey is:", answer, "|")]
    elif task == "multi":
        prefix = tpl.pieces["|The value of "]
        q_start = start - (prefix.shape[0] + n + tpl.pieces["is"].shape[0])
        key = tokens[q_start + prefix.shape[0] : q_start + prefix.shape[0] + n]
        query = tpl.cat("|The value of ", key, "is", answer)
        needles = [tpl.cat("|One of the special magic numbers for ", key, " is ", answer, "|")]
    else:
        m = (n - tpl.pieces[","].shape[0]) // 2
        var1, var2 = answer[:m], answer[n - m :]
        prefix = tpl.pieces["|The path from"]
        q_start = start - (prefix.shape[0] + m + tpl.pieces["is"].shape[0])
        key = tokens[q_start + prefix.shape[0] : q_start + prefix.shape[0] + m]
        query = tpl.cat("|The path from", key, "is", var1, ",", var2)
        needles = [tpl.cat("|DEF", key, "->", var1, "|"), tpl.cat("|DEF", var1, "->", var2, "|")]
    np.testing.assert_array_equal(tokens[start + n - query.shape[0] : start + n], query)
    return needles


def test_single_question_ends_in_slot_zero(tok):
    chunk_size, length = 63, 63 * 40
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    s = niah.make_niah_sample(
        _haystack(length, tok),
        task="single",
        templates=tpl,
        chunk_size=chunk_size,
        rng=np.random.default_rng(0),
    )
    q = tpl.pieces["|What is the passkey? The passkey is"]
    start = s["answer_start"]
    np.testing.assert_array_equal(s["tokens"][start - q.shape[0] : start], q)
    assert start - 1 == length - chunk_size  # Last question id = slot 0 of the last chunk.
    # passkey_position finds the needle's copy: right after "The passkey is:".
    at = niah.passkey_position(s)
    needle = tpl.pieces["The passkey is:"]
    np.testing.assert_array_equal(s["tokens"][at - needle.shape[0] : at], needle)
    np.testing.assert_array_equal(s["tokens"][at : at + 10], s["tokens"][start : start + 10])


def test_same_seed_same_sample_and_passkeys_are_ordinary_ids(tok):
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    hay = _haystack(64 * 32, tok)
    for task in niah.TASKS:
        a = niah.make_niah_sample(
            hay, task=task, templates=tpl, chunk_size=64, rng=np.random.default_rng((3, 9))
        )
        b = niah.make_niah_sample(
            hay, task=task, templates=tpl, chunk_size=64, rng=np.random.default_rng((3, 9))
        )
        c = niah.make_niah_sample(
            hay, task=task, templates=tpl, chunk_size=64, rng=np.random.default_rng((3, 10))
        )
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        assert not np.array_equal(a["tokens"], c["tokens"])
        answer = a["tokens"][a["answer_start"] : a["answer_start"] + a["answer_len"]]
        assert not set(answer.tolist()) & set(tok.special_ids)


def test_niah_source_over_corpus(byte_corpus):
    tok = load_tokenizer("bytes")
    src = niah.NiahSource(
        byte_corpus, tok, task="multihop", seq_len=63 * 32, chunk_size=63, seed=0, passkey_len=1
    )
    assert len(src) == src.stream.num_tokens // (63 * 32)
    a, b = src[1], src[1]
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert a["answer_len"] == 3 and a["final_pos"] == a["answer_start"] + 2
    batch = next(
        iter(
            niah.make_niah_dataset(
                byte_corpus, tok, task="single", seq_len=63 * 32, chunk_size=63, seed=0
            ).batch(2)
        )
    )
    assert batch["tokens"].shape == (2, 63 * 32) and batch["final_pos"].shape == (2,)


def test_very_long_haystack_is_fast(byte_corpus):
    """16M tokens (2**24, chunk 64) from a small corpus that wraps around."""
    import time

    tok = load_tokenizer("bytes")
    src = niah.NiahSource(
        byte_corpus, tok, task="single", seq_len=1 << 24, chunk_size=64, seed=0, passkey_len=5
    )
    t0 = time.perf_counter()
    s = src[0]
    assert time.perf_counter() - t0 < 20
    assert s["tokens"].shape == (1 << 24,) and s["answer_start"] == (1 << 24) - 63


def test_scoring_rule():
    tokens = np.array([5, 6, 7, 8])
    logits = np.zeros((4, 10))
    logits[1, 7] = 1.0  # Position final_pos - 1 = 1 predicts tokens[2] = 7.
    assert niah.is_hit(logits, tokens, 2)
    assert not niah.is_hit(logits, tokens, 3)


def test_rejects_bad_inputs(byte_corpus, tiny_bpe_path):
    tok = load_tokenizer("bytes")
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    with pytest.raises(ValueError, match="must be a multiple of chunk_size=63"):
        niah.make_niah_sample(
            np.zeros(640, np.int32),
            task="single",
            templates=tpl,
            chunk_size=63,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(ValueError, match="task='nope' must be one of"):
        niah.make_niah_sample(
            np.zeros(630, np.int32),
            task="nope",
            templates=tpl,
            chunk_size=63,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(ValueError, match="too short"):
        niah.make_niah_sample(
            np.zeros(126, np.int32),
            task="single",
            templates=tpl,
            chunk_size=63,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(ValueError, match="different tokenizer"):
        niah.NiahSource(
            byte_corpus,
            load_tokenizer(tiny_bpe_path),
            task="single",
            seq_len=630,
            chunk_size=63,
            seed=0,
        )


@pytest.mark.parametrize("task", niah.TASKS)
def test_small_chunks_with_long_byte_questions(task):
    """c = 15 (the tiny config) is shorter than the byte-level questions: needles stay intact."""
    tok = load_tokenizer("bytes")
    tpl = niah.NiahTemplates.from_tokenizer(tok)
    for seed in range(20):
        s = niah.make_niah_sample(
            _haystack(600, tok, seed),
            task=task,
            templates=tpl,
            chunk_size=15,
            rng=np.random.default_rng(seed),
        )
        start, n = s["answer_start"], s["answer_len"]
        assert start == 600 - 15 + 1
        for needle in _expected_needles(task, s["tokens"], start, n, tpl):
            assert len(_find(s["tokens"][:start], needle)) == 1
