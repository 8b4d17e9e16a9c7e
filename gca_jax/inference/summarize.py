"""Batched summary generation (docs/spec.md §8, docs/inference.md "Summarization").

Each prompt is the `k * c` ids of `gca_jax.data.summarization.generation_prompt`; the prompts of
a batch are left-padded to a common multiple of ``engine.prompt_multiple`` (c is a multiple of
it), prefilled with ``engine.start_decoding``, then the held-out ":" is fed as the forced first
token and tokens are sampled (``generate.sample_next``) until every row has produced EOT or
``max_new_tokens`` tokens, the forced one included, as in the original. A row's prediction is
what it generated after the ":" and before its first EOT.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

from gca_jax.inference.generate import left_pad_prompts
from gca_jax.inference.sampling import sample_next


def summarize_batch(
    engine,
    prompts: Sequence[np.ndarray],
    first_ids: Sequence[int],
    *,
    max_new_tokens: int,
    eot_id: int,
    top_k: int = 2,
    top_p: float = 1.0,
    temperature: float = 1.0,
    key: jax.Array,
    on_step: Callable[[np.ndarray], None] | None = None,
) -> tuple[list[np.ndarray], int]:
    """Summaries of one batch of prompts.

    Args:
      engine: the engine of a model with the ``decode`` capability.
      prompts: B prompts of whole chunks (``generation_prompt``'s first value).
      first_ids: the forced first token of each row (the cue's ":").
      max_new_tokens: tokens per row, the forced one included (>= 2).
      eot_id: generation of a row ends at its first EOT.
      top_k: 1 = greedy; k > 1 = top-k sampling (the original's 2).
      top_p: < 1 = nucleus sampling (``sample_next``).
      temperature: sampling temperature.
      key: PRNG key.
      on_step: called after each step with the (B,) bool mask of rows that produced a token.

    Returns:
      (the B predictions, int32 ids without the ":" and without EOT; decode steps run).

    Raises:
      ValueError: bad sizes.
    """
    if max_new_tokens < 2:
        raise ValueError(f"{max_new_tokens=} must be >= 2 (the forced ':' and one more)")
    if len(first_ids) != len(prompts):
        raise ValueError(f"{len(first_ids)=} must equal {len(prompts)=}")
    tokens_BxT = left_pad_prompts(prompts, engine.prompt_multiple, engine.cfg.pad_id)
    _, decoder = engine.start_decoding(tokens_BxT, max_new_tokens)
    logits_BxV = decoder.feed(np.asarray(first_ids, np.int32))
    b = len(prompts)
    out = np.full((b, max_new_tokens - 1), eot_id, np.int32)
    done_B = np.zeros((b,), bool)
    steps = 0
    for i in range(max_new_tokens - 1):
        key, sub = jax.random.split(key)
        ids_B = np.asarray(
            sample_next(logits_BxV, sub, top_k=top_k, temperature=temperature, top_p=top_p)
        )
        out[:, i] = np.where(done_B, eot_id, ids_B)
        if on_step is not None:
            on_step(~done_B)
        done_B |= ids_B == eot_id
        steps += 1
        if done_B.all():
            break
        if i + 2 < max_new_tokens:
            logits_BxV = decoder.feed(ids_B)
    preds = []
    for row in out:
        stop = np.flatnonzero(row == eot_id)
        preds.append(row[: stop[0] if stop.size else row.shape[0]].copy())
    return preds, steps


def generate_summaries(
    engine,
    documents: Sequence[np.ndarray],
    fmt,
    *,
    batch_size: int,
    max_new_tokens: int,
    max_prompt_len: int | None,
    top_k: int = 2,
    top_p: float = 1.0,
    temperature: float = 1.0,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[np.ndarray], dict]:
    """Summaries of every document, in batches of similar prompt length.

    Prompts come from ``generation_prompt(doc, fmt, max_prompt_len=...)``; documents are sorted
    by prompt length (longest first, so the largest batch runs first) and the last batch is
    filled up with copies of its last prompt, so every batch has ``batch_size`` rows (one
    compilation per prompt length). Batch j samples with ``fold_in(key(seed), j)``.

    Args:
      engine: the engine of a ``decode`` model; ``fmt.chunk_size`` must be a multiple of its
        ``prompt_multiple``.
      documents: token ids of each document.
      fmt: the `SummarizationFormat` (cue, EOT, c).
      batch_size: rows per batch.
      max_new_tokens: see ``summarize_batch``.
      max_prompt_len: see ``generation_prompt`` (None: no truncation).
      top_k: see ``summarize_batch``.
      top_p: see ``summarize_batch``.
      temperature: see ``summarize_batch``.
      seed: sampling seed (the original's is 1).
      progress: called with (examples finished, tokens generated) after each batch step.

    Returns:
      (predictions in document order, {"new_tokens", "decode_steps", "prompt_tokens"}).

    Raises:
      ValueError: bad sizes, or a chunk size the engine cannot feed as whole chunks.
    """
    from gca_jax.data.summarization import generation_prompt

    if batch_size < 1:
        raise ValueError(f"{batch_size=} must be >= 1")
    if fmt.chunk_size % engine.prompt_multiple:
        raise ValueError(
            f"the summarization chunk c={fmt.chunk_size} must be a multiple of the engine's "
            f"prompt_multiple={engine.prompt_multiple}"
        )
    prompts = [generation_prompt(d, fmt, max_prompt_len=max_prompt_len) for d in documents]
    order = sorted(range(len(prompts)), key=lambda i: (-prompts[i][0].shape[0], i))
    preds: list[np.ndarray | None] = [None] * len(prompts)
    stats = {"new_tokens": 0, "decode_steps": 0, "prompt_tokens": 0}
    done = 0
    for j, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start : start + batch_size]
        filled = rows + [rows[-1]] * (batch_size - len(rows))

        def on_step(active_B: np.ndarray, n_real=len(rows)) -> None:
            stats["new_tokens"] += int(active_B[:n_real].sum())
            if progress is not None:
                progress(done, stats["new_tokens"])

        out, steps = summarize_batch(
            engine,
            [prompts[i][0] for i in filled],
            [prompts[i][1] for i in filled],
            max_new_tokens=max_new_tokens,
            eot_id=fmt.eot_id,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            key=jax.random.fold_in(jax.random.key(seed), j),
            on_step=on_step,
        )
        for i, pred in zip(rows, out):
            preds[i] = pred
        done += len(rows)
        stats["decode_steps"] += steps
        stats["prompt_tokens"] += sum(prompts[i][0].shape[0] for i in rows)
        if progress is not None:
            progress(done, stats["new_tokens"])
    return preds, stats


def score_summaries(tokenizer, pairs, predictions) -> dict:
    """ROUGE of predictions (ids) against the pairs' reference summaries (`rouge` module).

    Returns:
      {"text": {key: {"mean", "lo", "hi"}}, "tokens": {...}, "per_example": {"text": {key:
      [...]}, "tokens": {...}}}; "text" scores detokenized text, "tokens" the original's
      space-joined token strings (the reference re-encoded with the same tokenizer).
    """
    from gca_jax.inference import rouge

    texts = [tokenizer.decode(p) for p in predictions]
    refs = [s for _, s in pairs]
    per = {
        "text": rouge.text_scores(texts, refs),
        "tokens": rouge.token_scores(tokenizer, predictions, [tokenizer.encode(r) for r in refs]),
    }
    return {
        "text": rouge.summarize(per["text"]),
        "tokens": rouge.summarize(per["tokens"]),
        "per_example": {k: {m: v.tolist() for m, v in d.items()} for k, d in per.items()},
    }


def summary_table(result: dict, *, title: str) -> str:
    """Markdown table of the mean scores with their 95% intervals."""
    lines = [
        f"ROUGE F x 100 ({title}; bootstrap 95% interval)",
        "",
        "| variant | metric | mean | 95% interval |",
        "|---|---|---|---|",
    ]
    names = {"text": "text (rouge-score, stemmed)", "tokens": "token strings (original)"}
    for variant, scores in result.items():
        if variant == "per_example":
            continue
        for metric, s in scores.items():
            lines.append(
                f"| {names[variant]} | {metric} | {s['mean']:.2f} | {s['lo']:.2f}-{s['hi']:.2f} |"
            )
    return "\n".join(lines)


def write_summary_outputs(out_dir, meta, result, tokenizer, pairs, predictions, *, shown=5):
    """Writes ``scores.json`` and ``examples.md``.

    ``scores.json``: meta, scores, per-example scores, predictions; ``examples.md``: the first
    ``shown`` document heads, references and outputs.
    """
    import os

    from gca_jax.inference.evaluation import write_json

    texts = [tokenizer.decode(p) for p in predictions]
    write_json(
        os.path.join(out_dir, "scores.json"),
        {
            **meta,
            "rouge_text": result["text"],
            "rouge_tokens": result["tokens"],
            "per_example": result["per_example"],
            "predictions": texts,
        },
    )
    lines = [f"# Summaries: {meta.get('split', '')} split", "", summary_table(result, title="all")]
    for i, ((doc, ref), pred) in enumerate(zip(pairs, texts)):
        if i >= shown:
            break
        head = " ".join(doc.split())[:600]
        lines += [
            "",
            f"## Example {i + 1}",
            "",
            f"**Document** (first 600 characters): {head}",
            "",
            f"**Reference:** {ref}",
            "",
            f"**Output:** {pred if pred.strip() else '(empty)'}",
            "",
            "ROUGE-1/2/L (text): "
            + "/".join(
                f"{result['per_example']['text'][k][i]:.1f}" for k in ("rouge1", "rouge2", "rougeL")
            ),
        ]
    tmp = os.path.join(out_dir, "examples.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(out_dir, "examples.md"))
