"""How many chunks do the 2-hop needles cover, and do they all fit in one top-K retrieval?

PYTHONPATH=. python3 scripts/niah_needle_chunks.py --corpus data/pydocs/validation \
    --shape 4096,64,8 --shape 512,16,4

For each --shape T,S,K: over --samples 2-hop samples (docs/spec.md §6.4; 4 needles
"|DEF a -> b|"), the number of distinct chunks of S tokens the needles touch, and the fraction
of samples where they are at most K, i.e. where one retrieval group can hold every needle at
once and answer without a second hop (docs/results.md).
"""

import argparse

import numpy as np


def needle_starts(tokens: np.ndarray, head: np.ndarray, arrow: np.ndarray, n: int) -> list[int]:
    """Starts of "|DEF" + n ids + "->" + n ids + "|" in ``tokens`` (pattern and arrow checked)."""
    h, a = len(head), len(arrow)
    return [
        j
        for j in range(len(tokens) - h - n - a)
        if (tokens[j : j + h] == head).all() and (tokens[j + h + n : j + h + n + a] == arrow).all()
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--corpus", required=True)
    p.add_argument("--shape", action="append", required=True, help="T,S,K (repeatable)")
    p.add_argument("--samples", type=int, default=300)
    args = p.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags
    from gca_jax.data import load_tokenizer
    from gca_jax.data.niah import DEFAULT_PASSKEY_LEN, NiahSource, NiahTemplates

    tok = load_tokenizer("bytes")
    tpl = NiahTemplates.from_tokenizer(tok)
    head, arrow = tpl.pieces["|DEF"], tpl.pieces["->"]
    n = DEFAULT_PASSKEY_LEN["multihop"]
    needle_len = len(head) + n + len(arrow) + n + len(tpl.pieces["|"])
    for shape in args.shape:
        t, s, k = (int(x) for x in shape.split(","))
        src = NiahSource(
            args.corpus,
            tok,
            task="multihop",
            seq_len=t,
            chunk_size=s,
            seed=3,
            num_samples=args.samples,
        )
        counts = []
        for i in range(len(src)):
            starts = needle_starts(np.asarray(src[i]["tokens"]), head, arrow, n)
            if len(starts) != 4:
                raise ValueError(f"sample {i}: found {len(starts)} needles, expected 4")
            chunks = {c for j in starts for c in range(j // s, (j + needle_len - 1) // s + 1)}
            counts.append(len(chunks))
        counts = np.asarray(counts)
        print(
            f"T={t} S={s} K={k}: needles cover {counts.mean():.2f} chunks on average "
            f"(max {counts.max()}); all within one top-{k}: {np.mean(counts <= k):.1%} "
            f"of {len(counts)} samples"
        )


if __name__ == "__main__":
    main()
