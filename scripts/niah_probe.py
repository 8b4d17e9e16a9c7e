"""Why a DRT misses single-needle passkeys: does it retrieve the needle, and does it read it?

PYTHONPATH=. python3 scripts/niah_probe.py --checkpoint RUN_DIR --corpus data/pydocs/validation \
    --seq_len 4096 --samples 12

Per sample: the rank of the chunk holding the needle's text ("The passkey is:") and of the chunk
holding the first passkey token among the query chunk's retrieval candidates (0 = best score;
group 0, noise-free), the probability of the true answer token, and how far the answer's
log-probabilities move when the needle's passkey tokens are replaced (a model that copies
through GCA moves a lot) against a same-size edit at the start of the haystack (control).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--seq_len", type=int, default=4096)
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from gca_jax.data import load_tokenizer
    from gca_jax.data.niah import NiahSource, passkey_position
    from gca_jax.inference.loading import load_for_eval
    from gca_jax.modeling import retrieval as ret_lib
    from gca_jax.modeling.stack import apply_stack

    model, cfg, _ = load_for_eval(None, checkpoint=args.checkpoint)
    tok = load_tokenizer(cfg.data.tokenizer)
    s, p_slots = cfg.model.retrieval.chunk_len, cfg.model.retrieval.slots_per_chunk
    source = NiahSource(
        args.corpus, tok, task="single", seq_len=args.seq_len, chunk_size=s, seed=args.seed,
        num_samples=args.samples,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    logits = jax.jit(lambda t: model.logits(t))

    @jax.jit
    def scores(t):
        h = apply_stack(model.lower, model.embed_chunks(t), remat="none")
        b, c = t.shape[0], h.shape[1] // p_slots
        memory = model.encode_chunks(h.reshape(b, c, p_slots, -1))
        query = model.lmk_norms[0](h.reshape(b, c, p_slots, -1)[:, :, -1])
        return ret_lib.retrieval_scores(query, memory.landmarks)[0]

    print("needle@  text/key chunk  rank text/key  p(true)  |dlogp| needle-edit / control")
    for i in range(args.samples):
        sample = source[i]
        toks = np.where(np.asarray(sample["tokens"]) < 0, tok.pad_id, sample["tokens"])
        fp, n = sample["final_pos"], sample["answer_len"]
        key_at = passkey_position(sample)
        text_chunk, key_chunk = (key_at - 3) // s, key_at // s  # "is:" ends just before the key
        row = fp // s - 1  # the landmark row that serves the query chunk
        cand = np.asarray(scores(jnp.asarray(toks[None])))[row, :row]
        order = list(np.argsort(-cand))
        edited, control = toks.copy(), toks.copy()
        vocab = np.asarray(tok.pad_id)
        edited[key_at : key_at + n] = rng.integers(0, vocab, n)
        control[:n] = rng.integers(0, vocab, n)
        lp = [
            jax.nn.log_softmax(logits(jnp.asarray(t[None]))[0, fp - 1])
            for t in (toks, edited, control)
        ]
        print(
            f"{key_at:7d}  {text_chunk:4d}/{key_chunk:<4d}      {order.index(text_chunk):3d}/"
            f"{order.index(key_chunk):<3d}      {float(jnp.exp(lp[0][toks[fp]])):.4f}   "
            f"{float(jnp.abs(lp[0] - lp[1]).max()):.4f} / {float(jnp.abs(lp[0] - lp[2]).max()):.4f}"
        )


if __name__ == "__main__":
    main()
