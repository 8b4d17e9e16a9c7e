"""The GPU benchmark scripts run end to end on CPU at tiny shapes (interpret-mode kernels)."""

import json

from benchmarks import gca, landmark, longctx, train_throughput


def test_gca_benchmark_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    gca.main(["--smoke"])
    printed = capsys.readouterr().out
    assert "| paper B4 C260 | default |" in printed and "forward halves" in printed
    result = json.loads((tmp_path / "gca_bench.json").read_text())
    assert "error" not in result["bounds"] and result["bounds"]["loads_only_ms"] > 0
    assert all("error" not in row for row in result["rows"])


def test_train_throughput_profile_smoke(tmp_path, capsys):
    assert (
        train_throughput.main(
            ["--cases", "tiny:240:2:full", "--steps", "1", "--profile_dir", str(tmp_path)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert list((tmp_path / "tiny_240_2_full").rglob("*.xplane.pb"))  # the two steps were traced
    assert "**tiny_240_2_full** device kernel time" in printed
    assert "| tiny | 240 | 2 | full |" in printed


def test_ratios_compare_rows_of_the_same_remat_policy():
    """A later case with another remat policy or batch must not replace the primary one."""
    rows = [
        {"model": "drt", "T": 16, "remat": "full", "tok_s": 272.0},
        {"model": "swa", "T": 16, "remat": "full", "tok_s": 321.0},
        {"model": "full", "T": 16, "remat": "full", "tok_s": 136.0},
        {"model": "drt", "T": 16, "remat": "dots", "tok_s": 263.0},
        {"model": "drt", "T": 16, "remat": "full", "tok_s": 100.0},  # e.g. another batch size
        {"model": "swa", "T": 16, "remat": "dots", "error": "failed"},
    ]
    lines = train_throughput._ratios(rows)
    assert lines == [
        "- T=16, remat full: DRT step / SWA step (per token) = 1.18 (target <= 1.2); "
        "DRT tokens/s / full attention = 2.00x"
    ]


def test_landmark_benchmark_smoke(capsys):
    assert landmark.main(["--smoke"]) == 0
    printed = capsys.readouterr().out
    assert "check rel err" in printed and "| landmark (interpret, blocks of 16) |" in printed


def test_longctx_decode_loops_smoke():
    """Both decode loops run (a shorter last span included) and count the same tokens."""
    job = dict(
        config="configs/tiny.yaml",
        overrides=["model.kernel_backend=xla"],
        segment_chunks=4,
        kind="decode",
        length=15 * 8,
        batch=2,
        steps=20,  # a chunk of 15 and a span of 5
    )
    for loop in ("token", "fused"):
        r = longctx.run_decode(dict(job, loop=loop))
        assert r["tokens"] == 40 and r["tokens_per_s"] > 0
