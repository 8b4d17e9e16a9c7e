"""The comparison study (docs/results.md, "The comparison"): its configs are matched, its tables
read what the evaluations write, and scripts/compare.sh runs, skips finished stages and stops at
BUDGET_S."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import compare_tables  # noqa: E402

# Exact parameter counts (GPT-2's 50,265-row tied embedding is 12.9M of each).
PARAMS = {
    "swa": 16_278_016,
    "swa_plus2": 17_982_976,
    "landmark": 16_278_016,
    "brt": 16_835_584,
    "rpt": 17_524_736,
    "drt_x1": 17_524_992,
    "drt_x2": 17_525_248,
}


def test_configs_are_matched_and_their_sizes_exact():
    from flax import nnx

    from gca_jax.config import load_config
    from gca_jax.modeling import build_model, count_params

    assert sorted(PARAMS) == sorted(compare_tables.MODELS)
    assert sorted(f[:-5] for f in os.listdir(os.path.join(REPO, "configs/compare"))) == sorted(
        PARAMS
    )
    shared = None
    for name, want in PARAMS.items():
        idf = ["model.rpt.idf_path=null"] if name == "rpt" else []  # no corpus statistics here
        cfg = load_config(os.path.join(REPO, "configs/compare", f"{name}.yaml"), idf)
        m, d, t = cfg.model, cfg.data, cfg.train
        same = (m.vocab_size, m.hidden_size, m.num_heads, m.mlp_hidden, d.tokenizer, d.corpus_dir)
        same += (d.seq_len, d.batch_size, d.niah_chunk_len, t.steps, t.lr, t.warmup_steps, t.seed)
        shared = shared or same
        assert same == shared, name
        model = nnx.eval_shape(lambda cfg=cfg: build_model(cfg.model, rngs=nnx.Rngs(0)))
        assert count_params(model) == want, name
    assert shared[6] == compare_tables.TRAIN_LEN


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def _fake_study(out):
    ppl = {"results": [{"length": 4032, "ppl": 2.5, "ppl_ci95": [2.4, 2.61]}]}
    _write(f"{out}/drt_x1/ppl_tech/ppl.json", ppl)
    acc = lambda t, h, n: dict(length=t, hits=h, samples=n, accuracy=h / n, ci95=[0.0, 1.0])  # noqa: E731
    _write(
        f"{out}/drt_x1/passkey_single/passkey.json",
        {"step": 30, "summaries": [acc(4032, 50, 50), acc(64512, 49, 50)]},
    )
    _write(f"{out}/swa/passkey_single/passkey.json", {"step": 31, "summaries": [acc(4032, 1, 50)]})
    _write(f"{out}/swa/lm_metrics.jsonl", '{"step": 1000, "split": "train", "loss": 3.25}\n')
    rouge = {k: {"mean": 20.0, "lo": 10.0, "hi": 30.0} for k in ("rouge1", "rouge2", "rougeL")}
    _write(f"{out}/swa/summarize/scores.json", {"rouge_text": rouge, "rouge_tokens": rouge})
    head = "| model | T | B | remat | step ms | tokens/s | MFU | peak GiB | compile s | status |"
    rows = [
        "| swa | 4032 | 16 | full | 200.0 | 320,000 | 26.0% | 7.0 | 7 | ok |",
        "| drt | 4032 | 16 | full | 250.0 | 256,000 | 25.0% | 9.2 | 40 | ok |",
        "| brt | 4032 | 16 | full | - | - | - | - | - | JaxRuntimeError |",
    ]
    _write(f"{out}/cost/throughput.md", "\n".join([head, "|---|" * 10, *rows]) + "\n")


def test_tables_and_plots_from_the_evaluations_files(tmp_path):
    out = str(tmp_path)
    _fake_study(out)
    assert compare_tables.main([out]) == 0
    md = open(f"{out}/compare.md").read()
    assert "| DRT ret x1 | 2.50 (2.40-2.61) |" in md
    assert (
        "| DRT ret x1 | 100 (50/50) | 98 (49/50) |" in md
        and "| SWA (BaseLM) | 2 (1/50) | - |" in md
    )
    assert "| 4032 (1x) | 64512 (16x) |" in md
    assert "| SWA (BaseLM) | 1000 | 3.250 | 31, - |" in md
    assert "| DRT ret x1 | 256,000 | 1.25 | 1.22 |" in md
    assert "| Block-Recurrent Transformer | - | - | - |" in md  # a failed case has no ratio
    assert "| SWA (BaseLM) | 20.0 (10.0-30.0) |" in md and "29.43/8.04/23.26 |" in md
    for png in ("ppl_vs_length.png", "niah_vs_length.png"):
        assert os.path.getsize(f"{out}/{png}") > 1000


def test_tables_refuse_a_directory_without_results(tmp_path, capsys):
    assert compare_tables.main([str(tmp_path)]) == 2
    assert "no model results" in capsys.readouterr().err


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    return dict(
        env,
        PATH=os.path.dirname(sys.executable) + os.pathsep + env["PATH"],
        PYTHONPATH=REPO,
        **extra,
    )


def _run(args, env, timeout=60):
    return subprocess.run(
        ["bash", "scripts/compare.sh", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_script_refuses_unknown_models_and_stages(tmp_path):
    proc = _run([str(tmp_path)], _env(MODELS="drt_x1 gpt"))
    assert proc.returncode == 2 and "no configs/compare/gpt.yaml" in proc.stderr
    proc = _run([str(tmp_path)], _env(STAGES="lm train"))
    assert proc.returncode == 2 and "unknown stage 'train'" in proc.stderr


@pytest.fixture(scope="module")
def gpt2_data(tmp_path_factory):
    """A tiny tech/books/synopsis tree in GPT-2 tokens, from the built-in corpus."""
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    from gca_jax.data import prepare_builtin_corpus

    root = tmp_path_factory.mktemp("data")
    tok = os.path.join(REPO, "data/gpt2/tokenizer.json")
    prepare_builtin_corpus(str(root / "tech/train"), tok, split="train")
    prepare_builtin_corpus(str(root / "tech/validation"), tok, split="validation")
    (root / "books").mkdir()
    os.symlink(root / "tech/validation", root / "books/validation")
    (root / "synopsis").mkdir()
    pair = {"document": "A manual about parsing command lines. " * 20, "summary": "Parse options."}
    for split in ("train", "validation", "test"):
        _write(str(root / "synopsis" / f"{split}.jsonl"), (json.dumps(pair) + "\n") * 4)
    return str(root)


def test_budget_spent_starts_nothing_and_says_how_to_continue(tmp_path, gpt2_data):
    env = _env(DATA=gpt2_data, RUN_ROOT=str(tmp_path / "runs"), BUDGET_S="0", MODELS="swa")
    proc = _run([str(tmp_path / "out")], env)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # stopped by BUDGET_S
    assert "swa: lm not started" in proc.stdout and "cost: cost not started" in proc.stdout
    assert "swa: lm not started: BUDGET_S is spent; run the same command again" in proc.stdout
    assert not os.path.exists(tmp_path / "runs" / "swa")


TINY = [
    "model.hidden_size=32",
    "model.mlp_hidden=64",
    "model.num_heads=2",
    "model.num_kv_heads=2",
    "model.kernel_backend=interpret",
    "data.seq_len=504",
    "data.batch_size=2",
    "train.steps=2",
    "train.warmup_steps=1",
    "train.save_every=1",
    "train.eval_every=0",
    "train.log_every=1",
]


@pytest.mark.slow
def test_script_runs_every_stage_then_skips_them_on_a_rerun(tmp_path, gpt2_data):
    env = _env(
        DATA=gpt2_data,
        RUN_ROOT=str(tmp_path / "runs"),
        MODELS="drt_x1",
        STAGES="lm ppl single summarize",
        NIAH_STEPS="2",
        SUM_STEPS="2",
        PPL_LENGTHS="504",
        PPL_WINDOWS="2",
        SINGLE_LENGTHS="504,1008",
        SINGLE_SAMPLES="2,2",
    )
    out = tmp_path / "out"
    overrides = [*TINY, "data.max_summary_len=16"]
    proc = _run([str(out), *overrides], env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = ("lm", "ppl_tech", "ppl_books", "niah_single", "passkey_single")
    for stage in (*stages, "finetune_summarize", "summarize"):
        assert f"drt_x1: {stage} exit 0" in proc.stdout, proc.stdout
    md = (out / "compare.md").read_text()
    assert "| DRT ret x1 | 2 |" in md  # LM steps
    passkey = json.load(open(out / "drt_x1/passkey_single/passkey.json"))
    assert [s["length"] for s in passkey["summaries"]] == [504, 1008]
    assert "ppl_ci95" in json.load(open(out / "drt_x1/ppl_tech/ppl.json"))["results"][0]

    again = _run([str(out), *overrides], env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    for stage in stages:
        assert f"drt_x1: {stage} already done" in again.stdout, again.stdout


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Records each stage's command line; `-m train` leaves a checkpoint at its last train.steps,
# an evaluation its --out folder; `-c` (the script's config read) runs for real.
[ "$1" = -c ] && exec "$REAL_PYTHON" "$@"
echo "$*" >> "$FAKE_LOG"
steps=1000 dir= out= prev=
for a in "$@"; do
  case $a in train.steps=*) steps=${a#train.steps=} ;; esac
  [ "$prev" = --output_dir ] && dir=$a
  [ "$prev" = --out ] && out=$a
  prev=$a
done
[ -n "$dir" ] && mkdir -p "$dir/checkpoints/$steps" && touch "$dir/metrics.jsonl"
[ -n "$out" ] && mkdir -p "$out"
exit 0
"""


def test_every_model_in_a_slot_gets_the_corpus_overrides(tmp_path):
    """Two models one after the other in one slot: the second's stages see the same corpus paths
    (the held-out loop of the first's ppl stage once overwrote them with "books")."""
    data = tmp_path / "data"
    for d in ("tech/train", "tech/validation", "books/validation"):
        (data / d).mkdir(parents=True)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = _env(
        DATA=str(data),
        RUN_ROOT=str(tmp_path / "runs"),
        MODELS="swa drt_x1",
        STAGES="lm ppl",
        PYTHON=str(fake),
        FAKE_LOG=str(log),
        REAL_PYTHON=sys.executable,
    )
    proc = _run([str(tmp_path / "out"), "train.steps=3", "train.warmup_steps=1"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    trains = [c.split() for c in calls if c.startswith("-m train ")]
    assert [t[t.index("--config") + 1] for t in trains] == [
        "configs/compare/swa.yaml",
        "configs/compare/drt_x1.yaml",
    ]
    for t in trains:
        assert f"data.corpus_dir={data}/tech/train" in t and "books" not in t, t
    ppl = [c for c in calls if c.startswith("-m eval.ppl")]
    assert len(ppl) == 4 and all(f"data.corpus_dir={data}/tech/train" in c for c in ppl)
    assert [c.split("--corpus ")[1].split()[0] for c in ppl] == [
        f"{data}/{s}/validation" for s in ("tech", "books", "tech", "books")
    ]
