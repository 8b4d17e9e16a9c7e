#!/usr/bin/env bash
# Length-generalization reproduction (docs/results.md), one config: train on the LM + NIAH mix,
# then passkey accuracy at growing lengths and held-out perplexity.
#
# usage: scripts/repro_niah.sh CONFIG TASK LENGTHS SAMPLES OUT_DIR [key=value ...]
#   e.g. scripts/repro_niah.sh configs/niah_drt_x1_small.yaml single 4k,64k,1M 50,50,20 out
#   SAMPLES: one count, or one per length.
# Optional time limits in seconds (env): TRAIN_S stops training with SIGTERM, which saves a
# checkpoint where it stops, and the evaluation uses it; EVAL_S bounds the passkey evaluation,
# which keeps every length finished by then (passkey.json is rewritten after each length).
# RESUME=1 continues the run in RUN_ROOT (default /tmp/runs) instead of starting it afresh.
# Short-haystack warm-up: with WARM_S set, a first run of WARM_S seconds trains the same config
# with the overrides in WARM (default: 1024-token sequences, 64 per step: the same tokens per
# step as 16 x 4096), and the main run starts from its weights (--init_from).
# Needs a prepared corpus under $CORPUS/{train,validation} (default data/pydocs, docs/data.md
# §3.2). PPL_LENGTHS and PPL_WINDOWS set the perplexity evaluation (default 4096,16384 and 16).
set -uo pipefail
cfg=$1 task=$2 lengths=$3 samples=$4 out=$5
shift 5
name=$(basename "$cfg" .yaml)
corpus=${CORPUS:-data/pydocs}
data=(data.corpus_dir="$corpus/train" data.eval_corpus_dir="$corpus/validation")
run=${RUN_ROOT:-/tmp/runs}/$name
mkdir -p "$out/$name"
offload=()  # chunk memory in host memory; the sliding-window baseline has none
grep -qE "model_type: (drt|rpt)" "$cfg" && offload=(--offload)
limit() { if [ -n "${1:-}" ]; then echo "timeout --foreground --signal=TERM --kill-after=30 $1"; fi; }

fresh=--fresh
[ -n "${RESUME:-}" ] && fresh=  # continue the run in $run (e.g. one stopped by TRAIN_S)
init=()
if [ -n "${WARM_S:-}" ] && [ -z "${RESUME:-}" ]; then  # a resumed run keeps its weights
  read -ra warm <<< "${WARM:-data.seq_len=1024 data.batch_size=64}"
  $(limit "$WARM_S") python3 -m train --config "$cfg" --output_dir "$run-warm" --fresh \
    "${data[@]}" "$@" "${warm[@]}" > "$out/$name/warm.log" 2>&1
  echo "$name: warm-up exit $? at $(date -u +%T)"
  cp "$run-warm/metrics.jsonl" "$out/$name/warm_metrics.jsonl" || exit 1
  init=(--init_from "$run-warm")
fi
$(limit "${TRAIN_S:-}") python3 -m train --config "$cfg" --output_dir "$run" $fresh "${init[@]}" \
  "${data[@]}" "$@" > "$out/$name/train.log" 2>&1
echo "$name: train exit $? at $(date -u +%T)"
cp "$run/metrics.jsonl" "$out/$name/" || exit 1
$(limit "${EVAL_S:-}") python3 -m eval.passkey --config "$cfg" --checkpoint "$run" --task "$task" \
  --lengths "$lengths" --samples "$samples" --corpus "$corpus/validation" "${offload[@]}" \
  --out "$out/$name" "$@" > "$out/$name/passkey.log" 2>&1
echo "$name: passkey exit $? at $(date -u +%T)"
$(limit "${PPL_S:-}") python3 -m eval.ppl --config "$cfg" --checkpoint "$run" \
  --corpus "$corpus/validation" --lengths "${PPL_LENGTHS:-4096,16384}" \
  --windows "${PPL_WINDOWS:-16}" --out "$out/$name" "$@" \
  > "$out/$name/ppl.log" 2>&1
echo "$name: ppl exit $? at $(date -u +%T)"
