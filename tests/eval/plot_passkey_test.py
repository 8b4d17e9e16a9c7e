"""eval.plot_passkey: several runs' passkey.json in one plot and one markdown table."""

import json
import os

import pytest

from eval import plot_passkey


def _run(root, name, rows):
    run_dir = root / name
    run_dir.mkdir()
    summaries = [
        {"length": n, "samples": s, "hits": h, "accuracy": h / s, "ci95": [0.0, 1.0]}
        for n, s, h in rows
    ]
    (run_dir / "passkey.json").write_text(json.dumps({"summaries": summaries}))
    return str(run_dir)


def test_table_and_plot(tmp_path, capsys):
    a = _run(tmp_path, "a", [(4096, 50, 50), (1 << 22, 10, 9)])
    b = _run(tmp_path, "b", [(4096, 50, 1), (16384, 50, 0)])
    out = str(tmp_path / "pk.png")
    assert plot_passkey.main(["--run", f"DRT={a}", "--run", f"SWA={b}", "--out", out]) == 0
    assert os.path.getsize(out) > 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| model | 4K | 16K | 4M |"
    assert lines[2] == "| DRT | 100 (50/50) | - | 90 (9/10) |"
    assert lines[3] == "| SWA | 2 (1/50) | 0 (0/50) | - |"


@pytest.mark.parametrize("arg", ["no_label_here", "X=/nonexistent/dir"])
def test_bad_run_is_an_error(tmp_path, arg, capsys):
    assert plot_passkey.main(["--run", arg, "--out", str(tmp_path / "x.png")]) == 2
    assert "--run" in capsys.readouterr().err
