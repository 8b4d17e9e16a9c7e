"""Retrieval inspection: which past chunks each chunk attended to, per group, and how much."""

import numpy as np

from gca_jax.inference.engine import Engine


def inspect_retrieval(engine: Engine, tokens_T, *, decode=None) -> dict:
    """Runs one text through the model and lists every chunk's retrieved chunks.

    Retrieval is query-aligned (chunk c uses the row computed at chunk c - 1's landmark) and
    padding picks (weight 0) are dropped. Chunks are those of the left-padded input.

    Args:
      engine: the model's engine.
      tokens_T: token ids (T,), T >= 1.
      decode: optional ids -> text, to show each chunk's text.

    Returns:
      ``{"chunk_len", "pad", "chunks": [text...] (with ``decode``), "groups": [[{"chunk": c,
      "retrieved": [{"chunk": e, "weight": w}, ...]} ...] per group]}``.
    """
    tokens = np.asarray(tokens_T, np.int64).reshape(1, -1)
    out = engine.prefill(tokens, record=True)
    s = engine.rcfg.chunk_len
    groups = []
    for idx_BxCxK, w_BxCxK in out.retrievals:
        rows = []
        for c in range(idx_BxCxK.shape[1]):
            picks = sorted(
                ((int(e), float(w)) for e, w in zip(idx_BxCxK[0, c], w_BxCxK[0, c]) if w > 0),
                key=lambda x: -x[1],
            )
            rows.append({"chunk": c, "retrieved": [{"chunk": e, "weight": w} for e, w in picks]})
        groups.append(rows)
    result = {"chunk_len": s, "pad": out.pad, "groups": groups}
    if decode is not None:
        padded = np.concatenate([np.full((out.pad,), -1), tokens[0]])
        result["chunks"] = [
            decode(padded[i : i + s][padded[i : i + s] >= 0]) for i in range(0, padded.shape[0], s)
        ]
    return result


def weight_matrices(result: dict) -> list[np.ndarray]:
    """Per group, a (C, C) matrix: entry [c, e] = weight with which chunk c read chunk e."""
    mats = []
    for rows in result["groups"]:
        m = np.zeros((len(rows), len(rows)), np.float32)
        for r in rows:
            for pick in r["retrieved"]:
                m[r["chunk"], pick["chunk"]] += pick["weight"]
        mats.append(m)
    return mats


def plot_heatmaps(result: dict, path: str) -> None:
    """PNG with one heat map per group (query chunk vs retrieved chunk, colour = weight)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mats = weight_matrices(result)
    fig, axes = plt.subplots(1, len(mats), figsize=(4.5 * len(mats), 4), squeeze=False)
    for g, (ax, m) in enumerate(zip(axes[0], mats)):
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0, origin="upper")
        ax.set_title(f"group {g + 1}")
        ax.set_xlabel("retrieved chunk e")
        ax.set_ylabel("query chunk c")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
