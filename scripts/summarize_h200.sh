#!/usr/bin/env bash
# Summarization on one H200 (docs/results.md, "Summarization"), about 8 minutes: a small DRT and
# the sliding-window baseline, side by side on the one GPU, each
#   1. pre-trained on the `tech` corpus for PRE_S seconds (data.task=lm; SIGTERM saves a checkpoint),
#   2. fine-tuned from those weights (--init_from) on the synopsis pairs for FT_S seconds,
#   3. scored by eval.summarize on the test pairs (top-2 sampling, at most 128 new tokens);
# then the ROUGE table of both.
# usage: scripts/summarize_h200.sh OUT_DIR [key=value ...]    (overrides go to every stage)
# Env: PRE_S (default 150), FT_S (100), EVAL_S (150), RUN_ROOT (default /tmp/runs), PYTHON
# (default python3), WHEELS (default .whl: rouge-score and its dependencies as wheels, installed
# with pip --no-index when rouge_score cannot be imported).
# Needs, in the working tree: data/gpt2 (make gpt2), data/tech/{train,validation} (make tech) and
# data/synopsis (python -m train.prepare --recipe synopsis data/debian --out data/synopsis).
set -uo pipefail
out=$1
shift
py=${PYTHON:-python3}
runs=${RUN_ROOT:-/tmp/runs}
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 PYTHONUNBUFFERED=1
mkdir -p "$out"
for need in data/gpt2/tokenizer.json data/tech/train data/tech/validation data/synopsis/test.jsonl; do
  [ -e "$need" ] || { echo "error: $need is missing (see the header of $0)" >&2; exit 2; }
done
if ! $py -c "import rouge_score" 2>/dev/null; then
  $py -m pip install -q --no-index --find-links "${WHEELS:-.whl}" rouge-score==0.1.2 || exit 1
fi
limit() { echo "timeout --foreground --signal=TERM --kill-after=30 $1"; }

model() {  # model NAME: the three stages of configs/summarize_NAME_small.yaml
  local name=$1 cfg=configs/summarize_$1_small.yaml run=$runs/summarize_$1
  shift
  mkdir -p "$out/$name"
  $(limit "${PRE_S:-150}") $py -m train --config "$cfg" --output_dir "$run-pre" --fresh \
    data.task=lm train.steps=4000 train.warmup_steps=100 train.save_every=1000 "$@" \
    > "$out/$name/pretrain.log" 2>&1
  echo "$name: pre-training exit $? at $(date -u +%T)"
  cp "$run-pre/metrics.jsonl" "$out/$name/pretrain_metrics.jsonl" || return 1
  $(limit "${FT_S:-100}") $py -m train --config "$cfg" --output_dir "$run-ft" --fresh \
    --init_from "$run-pre" "$@" > "$out/$name/finetune.log" 2>&1
  echo "$name: fine-tuning exit $? at $(date -u +%T)"
  cp "$run-ft/metrics.jsonl" "$out/$name/finetune_metrics.jsonl" || return 1
  $(limit "${EVAL_S:-150}") $py -m eval.summarize --checkpoint "$run-ft" --split test \
    --batch_size 24 --out "$out/$name" "$@" > "$out/$name/summarize.log" 2>&1
  echo "$name: eval.summarize exit $? at $(date -u +%T)"
}

echo "start at $(date -u +%T)"
model drt "$@" &
model swa "$@" &
wait
$py - "$out" <<'PY'
import json, os, sys

out = sys.argv[1]
rows = []
for name in ("drt", "swa"):
    path = os.path.join(out, name, "scores.json")
    if not os.path.exists(path):
        print(f"{name}: no scores.json (see {out}/{name}/*.log)")
        continue
    s = json.load(open(path))
    cell = lambda d, k: f"{d[k]['mean']:.1f} ({d[k]['lo']:.1f}-{d[k]['hi']:.1f})"
    text, tok = s["rouge_text"], s["rouge_tokens"]
    rows.append(
        f"| {name} | {s['step']} | {s['examples']} | "
        + " | ".join(cell(text, k) for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
        + " | " + " | ".join(cell(tok, k) for k in ("rouge1", "rouge2", "rougeL")) + " |"
    )
print("| model | fine-tune steps | test pairs | R-1 | R-2 | R-L | R-Lsum | token R-1 | token R-2 "
      "| token R-L |")
print("|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
echo "done at $(date -u +%T)"
