"""scripts/repro_niah.sh end to end at a tiny shape: warm-up, main run from its weights,
passkey and perplexity evaluation (the command of docs/results.md)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_repro_niah_runs_every_stage(tmp_path, builtin_corpus):
    from gca_jax.data import prepare_builtin_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    os.symlink(builtin_corpus, corpus / "validation")
    prepare_builtin_corpus(str(corpus / "train"), "bytes", split="train")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    env = dict(
        env,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        PYTHONPATH=REPO,
        CORPUS=str(corpus),
        RUN_ROOT=str(tmp_path / "runs"),
        WARM_S="300",
        WARM="data.seq_len=256 data.batch_size=4",
        PPL_LENGTHS="512",
        PPL_WINDOWS="2",
    )
    out = tmp_path / "out"
    args = ["configs/niah_probe_cpu.yaml", "single", "512,1k", "2", str(out)]
    overrides = ["train.steps=2", "train.warmup_steps=1", "data.batch_size=4", "train.eval_every=0"]
    proc = subprocess.run(
        ["bash", "scripts/repro_niah.sh", *args, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("warm-up", "train", "passkey", "ppl"):
        assert f"niah_probe_cpu: {stage} exit 0" in proc.stdout, proc.stdout
    run = out / "niah_probe_cpu"
    warm_dir = tmp_path / "runs" / "niah_probe_cpu-warm" / "checkpoints"
    assert f"parameters restored from {warm_dir}" in (run / "train.log").read_text()
    warm = [json.loads(x) for x in open(run / "warm_metrics.jsonl")]
    assert warm[-1]["step"] == 2
    passkey = json.load(open(run / "passkey.json"))
    assert [s["length"] for s in passkey["summaries"]] == [512, 1024]
    assert json.load(open(run / "ppl.json"))["results"][0]["length"] == 512
