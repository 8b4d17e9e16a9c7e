"""Tables and plots of the comparison study (docs/results.md, "The comparison").

usage: python scripts/compare_tables.py OUT_DIR

Reads what scripts/compare.sh left in OUT_DIR (per model: ppl_{tech,books}/ppl.json,
passkey_{single,multihop}/passkey.json, summarize/scores.json, *_metrics.jsonl; once:
cost/throughput.md) and writes OUT_DIR/compare.md (markdown tables, the paper's rows beside
ours), OUT_DIR/ppl_vs_length.png and OUT_DIR/niah_vs_length.png. A model or stage without results
is shown as "-": the tables can be made at any point of a study.
"""

import json
import os
import re
import sys

MODELS = ("swa", "swa_plus2", "landmark", "brt", "rpt", "drt_x1", "drt_x2")
LABELS = {
    "swa": "SWA (BaseLM)",
    "swa_plus2": "SWA + 2 layers",
    "landmark": "Landmark Attention",
    "brt": "Block-Recurrent Transformer",
    "rpt": "RPT, fixed BM25",
    "drt_x1": "DRT ret x1",
    "drt_x2": "DRT ret x2",
}
TRAIN_LEN = 4032
# The paper's rows (128M models, GPT-2 tokens, trained at 16K; its columns are absolute lengths,
# so they sit beside ours at the same multiple of the training length only approximately).
PAPER_SINGLE = {  # 4K, 16K, 64K, 256K
    "SWA + 2 layers": (15.37, 3.89, 0.0, None),
    "Block-Recurrent Transformer": (13.96, 6.01, 4.29, None),
    "RPT, fixed (Contriever)": (11.66, 4.24, 2.86, None),
    "Landmark Attention": (99.82, 97.88, 0.00, None),
    "DRT ret x1": (98.50, 98.59, 100.00, 100.00),
    "DRT ret x2": (99.65, 99.65, 100.00, 100.00),
}
PAPER_MULTIHOP = {  # 4K, 16K, 64K, 256K
    "SWA (BaseLM)": (1.15, 0.71, 0.0, 0.0),
    "SWA + 2 layers": (5.83, 1.06, 0.0, 0.0),
    "Landmark Attention": (88.35, 86.41, 0.0, 0.0),
    "DRT ret x1": (33.39, 39.93, 38.57, 35.29),
    "DRT ret x2": (84.45, 86.21, 81.43, 94.11),
}
PAPER_COST = {
    "SWA + 2 layers": 1.15,
    "Landmark Attention": 1.5,
    "DRT ret x1": 1.22,
    "DRT ret x2": 1.24,
}
PAPER_XSUM = {  # R-L on GPT-2 token strings
    "SWA (BaseLM)": (29.43, 8.04, 23.26),
    "SWA + 2 layers": (29.74, 8.26, 23.48),
    "Landmark Attention": (27.98, 6.96, 21.99),
    "DRT ret x1": (30.30, 8.59, 23.92),
    "DRT ret x2": (30.39, 8.64, 23.98),
}
COST_MODELS = {  # benchmarks.train_throughput case names of the 128M versions
    "swa": "swa",
    "swa_plus2": "swa2",
    "landmark": "landmark",
    "brt": "brt",
    "rpt": "rpt",
    "drt_x1": "drt",
    "drt_x2": "drt_x2",
}


def _json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _jsonl(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def _mult(length: int) -> str:
    return f"{round(length / TRAIN_LEN)}x"


def load(out: str) -> dict:
    """{model: {"ppl": {corpus: {length: row}}, "niah": {task: {length: summary}}, ...}}."""
    res = {}
    for m in MODELS:
        d = os.path.join(out, m)
        if not os.path.isdir(d):
            continue
        r = {"ppl": {}, "niah": {}, "steps": {}}
        for corpus in ("tech", "books"):
            p = _json(os.path.join(d, f"ppl_{corpus}", "ppl.json"))
            if p:
                r["ppl"][corpus] = {row["length"]: row for row in p["results"]}
        for task in ("single", "multihop"):
            p = _json(os.path.join(d, f"passkey_{task}", "passkey.json"))
            if p:
                r["niah"][task] = {s["length"]: s for s in p["summaries"]}
                r["steps"][f"niah_{task}"] = p.get("step")
        r["summarize"] = _json(os.path.join(d, "summarize", "scores.json"))
        lm = [x for x in _jsonl(os.path.join(d, "lm_metrics.jsonl")) if x.get("split") == "train"]
        if lm:
            r["steps"]["lm"] = lm[-1]["step"]
            r["lm_loss"] = lm[-1]["loss"]
        res[m] = r
    return res


def load_cost(out: str) -> dict[str, float]:
    """{case model: tokens/s} from the throughput table (ok rows, first of each model)."""
    try:
        with open(os.path.join(out, "cost", "throughput.md")) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    tok = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[-1] == "ok" and re.fullmatch(r"[\d,]+", cells[5]):
            tok.setdefault(cells[0], float(cells[5].replace(",", "")))
    return tok


def _cell(v) -> str:
    return "-" if v is None else v


def _ppl_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    ci = row.get("ppl_ci95")
    ci = f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
    return f"{row['ppl']:.2f}{ci}"


def _acc_cell(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{100 * s['accuracy']:.0f} ({s['hits']}/{s['samples']})"


def _paper(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _length_table(res: dict, key: str, panel: str, cell) -> list[str]:
    """A table of one model per row and one evaluation length per column (all models' lengths)."""
    lengths = sorted({t for r in res.values() for t in r[key].get(panel, {})})
    lines = ["| model | " + " | ".join(f"{t} ({_mult(t)})" for t in lengths) + " |"]
    lines.append("|---|" + "---|" * len(lengths))
    for m, r in res.items():
        rows = r[key].get(panel, {})
        lines.append(f"| {LABELS[m]} | " + " | ".join(cell(rows.get(t)) for t in lengths) + " |")
    return lines


def tables(res: dict, cost: dict[str, float]) -> str:
    """The markdown of compare.md."""
    md = ["# The comparison study", ""]
    md += ["## Training", "", "| model | LM steps | final LM loss | NIAH steps (single, 2-hop) |"]
    md += ["|---|---|---|---|"]
    for m, r in res.items():
        st = r["steps"]
        loss = f"{r['lm_loss']:.3f}" if "lm_loss" in r else "-"
        niah = f"{_cell(st.get('niah_single'))}, {_cell(st.get('niah_multihop'))}"
        md.append(f"| {LABELS[m]} | {_cell(st.get('lm'))} | {loss} | {niah} |")
    for corpus in ("tech", "books"):
        md += ["", f"## Perplexity, {corpus} held-out (95% interval over windows)", ""]
        md += _length_table(res, "ppl", corpus, _ppl_cell)
    for task, paper, name in (
        ("single", PAPER_SINGLE, "Single-needle NIAH"),
        ("multihop", PAPER_MULTIHOP, "2-hop NIAH"),
    ):
        md += ["", f"## {name}, % (hits / samples)", ""]
        md += _length_table(res, "niah", task, _acc_cell)
        md += ["", "Paper (128M, trained at 16K): 4K, 16K, 64K, 256K", ""]
        md += ["| paper model | 4K | 16K | 64K | 256K |", "|---|---|---|---|---|"]
        md += [
            f"| {k} | " + " | ".join(_paper(v) for v in vals) + " |" for k, vals in paper.items()
        ]
    md += ["", "## Training cost (128M versions, T = 4032, per token, relative to SWA)", ""]
    md += ["| model | tokens/s | step / SWA step | paper |", "|---|---|---|---|"]
    base = cost.get("swa")
    for m in MODELS:
        tok = cost.get(COST_MODELS[m])
        ratio = f"{base / tok:.2f}" if tok and base else "-"
        shown = f"{tok:,.0f}" if tok else "-"
        md.append(f"| {LABELS[m]} | {shown} | {ratio} | {_paper(PAPER_COST.get(LABELS[m]))} |")
    md += ["", "## Summarization (synopsis test pairs; the paper: XSum)", ""]
    md += [
        "| model | R-1 | R-2 | R-L | token R-1 | token R-2 | token R-L | paper XSum token R-1/2/L |"
    ]
    md += ["|---|---|---|---|---|---|---|---|"]
    for m, r in res.items():
        s = r.get("summarize")
        paper = PAPER_XSUM.get(LABELS[m])
        paper = "/".join(f"{v:.2f}" for v in paper) if paper else "-"
        if not s:
            md.append(f"| {LABELS[m]} | - | - | - | - | - | - | {paper} |")
            continue

        def c(d, k):
            return f"{d[k]['mean']:.1f} ({d[k]['lo']:.1f}-{d[k]['hi']:.1f})"

        text, tok = s["rouge_text"], s["rouge_tokens"]
        cells = [c(text, k) for k in ("rouge1", "rouge2", "rougeL")]
        cells += [c(tok, k) for k in ("rouge1", "rouge2", "rougeL")]
        md.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(md) + "\n"


def plots(res: dict, out: str) -> list[str]:
    """ppl_vs_length.png and niah_vs_length.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, key, panels, ylabel in (
        ("ppl_vs_length.png", "ppl", ("tech", "books"), "perplexity"),
        ("niah_vs_length.png", "niah", ("single", "multihop"), "accuracy, %"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, panel in zip(axes, panels, strict=True):
            for m, r in res.items():
                rows = r[key].get(panel, {})
                if not rows:
                    continue
                ts = sorted(rows)
                if key == "ppl":
                    ys = [rows[t]["ppl"] for t in ts]
                    ci = [rows[t].get("ppl_ci95") or [rows[t]["ppl"]] * 2 for t in ts]
                else:
                    ys = [100 * rows[t]["accuracy"] for t in ts]
                    ci = [[100 * v for v in rows[t]["ci95"]] for t in ts]
                err = [
                    [y - lo for y, (lo, _) in zip(ys, ci)],
                    [hi - y for y, (_, hi) in zip(ys, ci)],
                ]
                ax.errorbar(ts, ys, yerr=err, marker="o", capsize=3, label=LABELS[m])
            ax.set_xscale("log", base=2)
            ax.set_xlabel("evaluation length, tokens")
            ax.set_ylabel(ylabel)
            ax.set_title(panel)
            ax.axvline(TRAIN_LEN, color="gray", linestyle=":", linewidth=1)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, name)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print(
            "usage: python scripts/compare_tables.py OUT_DIR (a directory of compare.sh)",
            file=sys.stderr,
        )
        return 2
    out = argv[0]
    res = load(out)
    if not res:
        print(
            f"error: no model results under {out} (expected {', '.join(MODELS)})", file=sys.stderr
        )
        return 2
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(tables(res, load_cost(out)))
    for path in [os.path.join(out, "compare.md"), *plots(res, out)]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
