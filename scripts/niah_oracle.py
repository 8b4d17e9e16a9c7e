"""Can the upper layers learn to copy a passkey through GCA when retrieval is given?

PYTHONPATH=. python3 scripts/niah_oracle.py --config configs/niah_probe_cpu.yaml --steps 600

Trains the config's model on single-needle samples (every sample a task) with group 0's
retrieval replaced by an oracle: every row after the needle's chunk retrieves the chunk that
holds the first passkey token with weight 1 (the other slots weight 0). The retriever is taken out
of the loop, so this isolates the GCA value path and the upper layers. Prints the training loss
and the passkey accuracy (single-token argmax, docs/spec.md §6.5) on held-out samples, with the
oracle, every --eval_every steps. With --no_oracle the same loop runs with the model's own
retrieval.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def _needle_chunks(samples, chunk_len: int) -> np.ndarray:
    """Chunk of the needle's first passkey token, per sample."""
    from gca_jax.data.niah import passkey_position

    return np.asarray([passkey_position(s) // chunk_len for s in samples], np.int32)


def _oracle(needle_B):
    """Retrieval override: group 0 retrieves ``needle_B`` with weight 1 (None = own retrieval)."""
    from gca_jax.modeling.retrieval import force_rows

    if needle_B is None:
        return None
    return lambda group, rows, row_ids_C: rows if group else force_rows(rows, needle_B, row_ids_C)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/niah_probe_cpu.yaml")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval_every", type=int, default=100)
    p.add_argument("--eval_samples", type=int, default=64)
    p.add_argument("--no_oracle", action="store_true")
    args = p.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    import optax
    from flax import nnx

    from gca_jax.config import load_config
    from gca_jax.data import load_tokenizer
    from gca_jax.data.niah import NiahSource
    from gca_jax.modeling import build_model

    cfg = load_config(args.config, [])
    m, d = cfg.model, cfg.data
    model = build_model(m, rngs=nnx.Rngs(cfg.train.seed))
    tok = load_tokenizer(d.tokenizer)
    chunk_len = m.retrieval.chunk_len
    common = dict(task="single", seq_len=d.seq_len, chunk_size=chunk_len)
    train_src = NiahSource(
        d.corpus_dir, tok, seed=0, num_samples=args.steps * d.batch_size, **common
    )
    eval_src = NiahSource(d.eval_corpus_dir, tok, seed=1, num_samples=args.eval_samples, **common)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.train.clip_norm),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(
                0.0, cfg.train.lr, min(cfg.train.warmup_steps, args.steps // 2), args.steps,
                cfg.train.min_lr,
            ),
            b1=cfg.train.b1, b2=cfg.train.b2, eps=cfg.train.eps,
            weight_decay=cfg.train.weight_decay,
        ),
    )  # fmt: skip
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def batch(src, lo, hi):
        samples = [src[i] for i in range(lo, hi)]
        toks = np.stack([np.where(s["loss_mask"], s["tokens"], -1) for s in samples])
        needle = None if args.no_oracle else _needle_chunks(samples, chunk_len)
        return samples, jnp.asarray(toks, jnp.int32), needle

    @nnx.jit
    def train_step(model, opt, tokens, needle, key):
        def loss_fn(mm):
            return mm.loss(tokens, gumbel_key=key, retrieval_override=_oracle(needle))[0]

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def predict(model, tokens, needle, pos):
        h, _ = model.hidden_states(tokens, retrieval_override=_oracle(needle))
        h_at = jnp.take_along_axis(h, pos[:, None, None], axis=1)[:, 0]
        return jnp.argmax(h_at @ model.embed.table[...].T.astype(h_at.dtype), axis=-1)

    samples, eval_toks, eval_needle = batch(eval_src, 0, args.eval_samples)
    pos = jnp.asarray([s["final_pos"] - 1 for s in samples])
    target = np.asarray([s["target"] for s in samples])
    eval_toks = jnp.where(eval_toks < 0, tok.pad_id, eval_toks)
    key = jax.random.key(cfg.train.seed)
    start = time.perf_counter()
    mode = "own retrieval" if args.no_oracle else "oracle retrieval"
    print(f"{mode}: {args.config}, {args.steps} steps of {d.batch_size} x {d.seq_len}")
    for step in range(args.steps):
        _, toks, needle = batch(train_src, step * d.batch_size, (step + 1) * d.batch_size)
        loss = train_step(model, opt, toks, needle, jax.random.fold_in(key, step))
        if (step + 1) % args.eval_every == 0:
            pred = np.asarray(predict(model, eval_toks, eval_needle, pos))
            acc = float(np.mean(pred == target))
            print(
                f"step {step + 1}: loss {float(loss):.4f}, passkey accuracy {acc:.3f} "
                f"({int(acc * len(target))}/{len(target)}), {time.perf_counter() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
