"""ROUGE against hand-computed values, the bootstrap interval, top-p sampling, batched summaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.data import load_tokenizer, summarization
from gca_jax.inference import rouge, sample_next
from gca_jax.inference import summarize as summ


def test_text_rouge_hand_computed():
    # pred "the cats sat" vs ref "The cat sat down": stemmed unigrams {the, cat, sat} all shared,
    # P = 3/3, R = 3/4, F = 6/7; bigrams (the cat), (cat sat) shared of 2 and 3: F = 0.8.
    # Second pair: nothing shared. Third: identical, two lines (ROUGE-Lsum per line).
    scores = rouge.text_scores(
        ["the cats sat", "zebra", "a b\nc d"], ["The cat sat down", "lion", "a b\nc d"]
    )
    np.testing.assert_allclose(scores["rouge1"], [600 / 7, 0, 100])
    np.testing.assert_allclose(scores["rouge2"], [80, 0, 100])
    np.testing.assert_allclose(scores["rougeL"], [600 / 7, 0, 100])
    np.testing.assert_allclose(scores["rougeLsum"], [600 / 7, 0, 100])
    assert rouge.text_scores([""], ["x"])["rouge1"][0] == 0  # An empty prediction scores 0.


def test_token_rouge_is_the_original_variant():
    # Distinct n-grams: pred {A, B} (A twice), ref {A, B, C}: P = 1, R = 2/3, F = 0.8.
    out = rouge.token_rouge("A B A", "A B C")
    assert out["rouge1"] == pytest.approx(80, abs=1e-4)
    # Bigrams pred {AB, BA}, ref {AB, BC}: 1 shared of 2 and 2: F = 0.5.
    assert out["rouge2"] == pytest.approx(50, abs=1e-4)
    # Summary-level LCS: "A B" with ref sentence 1, "C" with ref sentence 2 (split on "."):
    # union {A, B, C} over 3 distinct predicted and 4 distinct reference words.
    out = rouge.token_rouge("A B . C", "A X B . C Y")
    p, r = 3 / 3, 3 / 5
    assert out["rougeL"] == pytest.approx(100 * 2 * p * r / (p + r + 1e-8))
    assert rouge.token_rouge("", "A")["rouge1"] == 0
    # Case matters and "Ġ" marks a leading space, as in the GPT-2 piece strings.
    assert rouge.token_rouge("Ġthe", "ĠThe")["rouge1"] == 0
    tok = load_tokenizer("bytes")
    ids = tok.encode("a b")
    assert rouge.token_string(tok, ids + [tok.eot_id]) == "a <0x20> b"
    np.testing.assert_allclose(rouge.token_scores(tok, [ids], [ids])["rougeL"], [100], atol=1e-4)


def test_bootstrap_interval():
    values = np.random.default_rng(0).normal(10, 2, size=400)
    lo, hi = rouge.bootstrap_interval(values)
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 2 / np.sqrt(400), rel=0.2)  # about +- 1.96 SE
    assert rouge.bootstrap_interval(values) == (lo, hi)  # Fixed seed.
    assert rouge.bootstrap_interval([5.0, 5.0]) == (5.0, 5.0)
    out = rouge.summarize({"rouge1": values})["rouge1"]
    assert out["lo"] == lo and out["mean"] == pytest.approx(values.mean())
    with pytest.raises(ValueError, match="no values"):
        rouge.bootstrap_interval([])


def test_top_p_keeps_the_smallest_likely_set():
    # Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1}; 0.4 keeps {0} only.
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
    keys = jax.random.split(jax.random.key(0), 2)
    draws = np.asarray(sample_next(logits, keys[0], top_k=1, temperature=1.0, top_p=0.7))
    assert set(draws.tolist()) == {0, 1} and 0.5 < np.mean(draws == 0) < 0.75  # 0.5 / 0.8
    once = sample_next(logits, keys[0], top_k=1, temperature=1.0, top_p=0.4)
    assert (np.asarray(once) == 0).all()
    within_k = sample_next(logits, keys[1], top_k=3, temperature=1.0, top_p=0.99)
    assert set(np.asarray(within_k).tolist()) <= {0, 1, 2}
    greedy = sample_next(logits, keys[0], top_k=1, temperature=1.0)
    assert (np.asarray(greedy) == 0).all()


class _ScriptedEngine:
    """An engine whose logits spell out a fixed continuation per row (after the forced ':')."""

    prompt_multiple = 4

    def __init__(self, scripts, vocab=16):
        self.scripts, self.vocab = scripts, vocab
        self.cfg = type("Cfg", (), {"pad_id": 15})()
        self.fed = []

    def start_decoding(self, tokens_BxT, max_new_tokens):
        assert tokens_BxT.shape[1] % 4 == 0
        self.prompts = tokens_BxT
        engine = self

        class Decoder:
            step = 0

            def feed(self, ids_B):
                engine.fed.append(np.asarray(ids_B).copy())
                out = np.full((len(engine.scripts), engine.vocab), -10.0, np.float32)
                for b, script in enumerate(engine.scripts):
                    out[b, script[min(self.step, len(script) - 1)]] = 10.0
                self.step += 1
                return jnp.asarray(out)

        return jnp.zeros((len(self.scripts), self.vocab)), Decoder()


def test_summarize_batch_forces_the_colon_and_stops_at_eot():
    eot = 14
    engine = _ScriptedEngine([[3, 4, eot, 5], [6, 7, 8, 9, 10]])
    preds, steps = summ.summarize_batch(
        engine, [np.ones(4, np.int32), np.ones(8, np.int32)], [12, 12],
        max_new_tokens=5, eot_id=eot, top_k=1, key=jax.random.key(0),
    )  # fmt: skip
    np.testing.assert_array_equal(engine.fed[0], [12, 12])  # The forced ':' first.
    assert engine.prompts.shape == (2, 8) and (engine.prompts[0, :4] == 15).all()  # left-padded
    assert [p.tolist() for p in preds] == [[3, 4], [6, 7, 8, 9]]  # 4 = max_new_tokens - 1
    assert steps == 4
    engine = _ScriptedEngine([[eot], [eot]])
    preds, steps = summ.summarize_batch(
        engine, [np.ones(4, np.int32)] * 2, [12, 12], max_new_tokens=9, eot_id=eot, top_k=1,
        key=jax.random.key(0),
    )  # fmt: skip
    assert steps == 1 and [p.size for p in preds] == [0, 0]  # All rows done: stop early.


def test_generate_summaries_keeps_document_order():
    tok = load_tokenizer("bytes")
    fmt = summarization.SummarizationFormat.from_tokenizer(
        tok, max_len=120, max_sum_len=16, chunk_size=12
    )
    engine = _ScriptedEngine([[1, tok.eot_id]] * 2, vocab=259)
    engine.prompt_multiple = 12
    engine.cfg.pad_id = tok.pad_id
    docs = [tok.encode_array("x" * n) for n in (5, 40, 20)]
    seen = []
    preds, stats = summ.generate_summaries(
        engine, docs, fmt, batch_size=2, max_new_tokens=4, max_prompt_len=None, top_k=1,
        progress=lambda done, n: seen.append(done),
    )  # fmt: skip
    assert [p.tolist() for p in preds] == [[1]] * 3 and seen[-1] == 3
    assert stats["new_tokens"] == 6  # 3 real rows x (1 + EOT); the filler row not counted.
    with pytest.raises(ValueError, match="multiple of the engine's prompt_multiple"):
        engine.prompt_multiple = 5
        summ.generate_summaries(engine, docs, fmt, batch_size=2, max_new_tokens=4,
                                max_prompt_len=None)  # fmt: skip
