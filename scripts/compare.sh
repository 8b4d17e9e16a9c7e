#!/usr/bin/env bash
# The comparison study (docs/results.md, "The comparison"): every model of configs/compare/
# through the same stages, resumably, then the tables and plots (scripts/compare_tables.py).
# usage: scripts/compare.sh OUT_DIR [key=value ...]   (overrides go to every stage)
#
# Stages, per model (STAGES picks and orders them; a finished stage is skipped on a rerun):
#   lm        pre-training on the config's corpus for its train.steps (same token budget for all)
#   ppl       eval.ppl of the lm weights on tech and books held-out text at 1x, 4x, 16x
#   single    NIAH fine-tuning from the lm weights on single-needle tasks, then eval.passkey at
#             1x to 256x the training length
#   multihop  the same on 2-hop tasks, eval.passkey at 1x to 64x
#   summarize fine-tuning from the lm weights on the synopsis pairs, then eval.summarize (ROUGE)
# and once, before the models, `cost` (in STAGES): benchmarks.train_throughput for the 128M
# versions of the seven at the training length, in one process.
#
# Env: MODELS (default: all seven), STAGES (default "cost lm ppl single multihop summarize"),
# RUN_ROOT (checkpoints, default runs/compare), GPUS (default 1) and SLOTS (models trained at
# once, default GPUS; slot i uses GPU i mod GPUS), BUDGET_S (no stage starts after this many
# seconds, and a running one is stopped by SIGTERM at that time, which saves a checkpoint: the
# same command run again continues where it stopped), EVAL_S (each evaluation's limit, default
# 1200: it keeps the lengths it finished), NIAH_STEPS (1500), SUM_STEPS (600), PPL_WINDOWS (16),
# PYTHON (python3), DATA (the prepared data's root, default data), PPL_LENGTHS, SINGLE_LENGTHS,
# SINGLE_SAMPLES, MULTIHOP_LENGTHS, MULTIHOP_SAMPLES (the evaluations' lengths and samples;
# defaults below: 1x-16x, 1x-256x and 1x-64x the training length of 4032).
# Needs data/gpt2, data/tech and data/books (make tech books) and data/synopsis (docs/data.md
# §6.1); the RPT idf is computed here when missing.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [key=value ...]" >&2; exit 2; }
out=$1
shift
py=${PYTHON:-python3}
runs=${RUN_ROOT:-runs/compare}
models=${MODELS:-swa swa_plus2 landmark brt rpt drt_x1 drt_x2}
stages=${STAGES:-cost lm ppl single multihop summarize}
gpus=${GPUS:-1}
slots=${SLOTS:-$gpus}
deadline=$(( $(date +%s) + ${BUDGET_S:-1000000000} ))
export PYTHONUNBUFFERED=1
here=$(dirname "$0")

for m in $models; do
  [ -f "configs/compare/$m.yaml" ] || { echo "error: no configs/compare/$m.yaml (MODELS)" >&2; exit 2; }
done
for s in $stages; do
  case $s in cost|lm|ppl|single|multihop|summarize) ;;
    *) echo "error: unknown stage '$s' (STAGES: cost lm ppl single multihop summarize)" >&2; exit 2 ;;
  esac
done
has() { [[ " $stages " == *" $1 "* ]]; }
data=${DATA:-data}
for need in data/gpt2/tokenizer.json "$data/tech/train" "$data/tech/validation"; do
  [ -e "$need" ] || { echo "error: $need is missing (make tech)" >&2; exit 2; }
done
if has ppl; then
  [ -e "$data/books/validation" ] || { echo "error: $data/books/validation is missing (make books)" >&2; exit 2; }
fi
if has summarize; then
  [ -e "$data/synopsis/test.jsonl" ] || { echo "error: $data/synopsis is missing (docs/data.md §6.1)" >&2; exit 2; }
fi
idf=$data/tech/train/bm25_idf.npy
if [[ " $models " == *" rpt "* ]] && [ ! -f "$idf" ]; then
  $py -m train.prepare --bm25-idf "$data/tech/train" --chunk_len 63 || exit 1
fi
corpus=(data.corpus_dir="$data/tech/train" data.eval_corpus_dir="$data/tech/validation")
mkdir -p "$out" "$runs"

# stage NAME MODEL DONE_MARKER [LIMIT_S] COMMAND...: runs COMMAND under the time left (and at
# most LIMIT_S seconds when given: the evaluations, which keep every length they finished),
# logs to $out/MODEL/NAME.log, writes the marker on exit 0 or when LIMIT_S stopped it.
# Returns 0 done, 1 failed, 3 out of BUDGET_S time (the script then exits 3: run it again).
stage() {
  local name=$1 m=$2 marker=$3 limit=
  shift 3
  [[ "$1" =~ ^[0-9]+$ ]] && { limit=$1; shift; }
  [ -e "$marker" ] && { echo "$m: $name already done"; return 0; }
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 60 ]; then
    echo "$m: $name not started: BUDGET_S is spent; run the same command again to continue"
    return 3
  fi
  local run_s=$left
  [ -n "$limit" ] && [ "$limit" -lt "$left" ] && run_s=$limit
  timeout --foreground --signal=TERM --kill-after=30 "$run_s" "$@" >> "$out/$m/$name.log" 2>&1
  local rc=$?
  echo "$m: $name exit $rc at $(date -u +%T)"
  if [ "$rc" -eq 0 ] || { [ "$rc" -eq 124 ] && [ "$run_s" != "$left" ]; }; then
    [ "$rc" -eq 124 ] && echo "$m: $name stopped by its ${limit} s limit; it keeps what it finished"
    touch "$marker"
    return 0
  fi
  [ "$rc" -eq 124 ] && return 3
  return 1
}

# train_stage NAME MODEL RUN [train args...]: done when RUN has a checkpoint at its train.steps
# (a run stopped by SIGTERM exits 0 too, but is not done).
train_stage() {
  local name=$1 m=$2 run=$3
  shift 3
  local cfg=configs/compare/$m.yaml rc
  stage "$name" "$m" "$run/.done" $py -m train --config "$cfg" --output_dir "$run" "$@"
  rc=$?
  cp "$run/metrics.jsonl" "$out/$m/${name}_metrics.jsonl" 2>/dev/null
  if [ "$rc" -eq 0 ] && [ -e "$run/.done" ]; then
    local steps
    steps=$($py -c 'import sys; from gca_jax.config import load_config
keys = [a for a in sys.argv[2:] if "=" in a and not a.startswith("-")]
print(load_config(sys.argv[1], keys).train.steps)' "$cfg" "$@" 2>/dev/null | tail -1)
    if [ -z "$steps" ] || [ ! -d "$run/checkpoints/$steps" ]; then
      rm -f "$run/.done"
      echo "$m: $name stopped before step $steps; run the same command again to continue"
      return 3
    fi
  fi
  return "$rc"
}

niah_stage() {  # niah_stage MODEL TASK LENGTHS SAMPLES [overrides]
  local m=$1 task=$2 lengths=$3 samples=$4
  shift 4
  local run=$runs/$m/niah_$task offload=()
  grep -qE "model_type: (drt|rpt)" "configs/compare/$m.yaml" && offload=(--offload)
  local ft=(data.niah_fraction=1.0 "data.niah_task=$task" data.answer_weight=100
    "train.steps=${NIAH_STEPS:-1500}" train.lr=2e-3 train.warmup_steps=100 train.eval_every=0
    train.save_every=500)
  train_stage "niah_$task" "$m" "$run" --init_from "$runs/$m/lm" "${ft[@]}" "$@" || return $?
  stage "passkey_$task" "$m" "$out/$m/passkey_$task/.done" "${EVAL_S:-1200}" $py -m eval.passkey \
    --checkpoint "$run" --task "$task" --lengths "$lengths" --samples "$samples" \
    --corpus "$data/tech/validation" "${offload[@]}" --out "$out/$m/passkey_$task" "$@"
}

model() {  # model NAME [overrides]: its stages in order; stops at the first that cannot go on
  local m=$1 rc
  shift
  mkdir -p "$out/$m"
  local own=("${corpus[@]}")  # the corpus paths, then the caller's overrides
  [ "$m" = rpt ] && own+=("model.rpt.idf_path=$idf")
  set -- "${own[@]}" "$@"
  for s in $stages; do
    case $s in
      lm) train_stage lm "$m" "$runs/$m/lm" "$@" ;;
      ppl)
        local heldout  # not `corpus`: that global holds every stage's corpus overrides
        for heldout in tech books; do
          stage "ppl_$heldout" "$m" "$out/$m/ppl_$heldout/.done" "${EVAL_S:-1200}" $py -m eval.ppl \
            --checkpoint "$runs/$m/lm" --corpus "$data/$heldout/validation" \
            --lengths "${PPL_LENGTHS:-4032,16128,64512}" --windows "${PPL_WINDOWS:-16}" \
            --out "$out/$m/ppl_$heldout" "$@" || break
        done ;;
      single) niah_stage "$m" single "${SINGLE_LENGTHS:-4032,16128,64512,258048,1032192}" \
        "${SINGLE_SAMPLES:-50,50,50,20,10}" "$@" ;;
      multihop) niah_stage "$m" multihop "${MULTIHOP_LENGTHS:-4032,16128,64512,258048}" \
        "${MULTIHOP_SAMPLES:-50,50,50,20}" "$@" ;;
      summarize)
        local sum=(data.task=summarization "data.summary_dir=$data/synopsis" data.max_summary_len=64
          data.answer_weight=10 data.seq_len=2016 "train.steps=${SUM_STEPS:-600}"
          train.warmup_steps=20 train.eval_every=0 train.save_every=200)
        train_stage finetune_summarize "$m" "$runs/$m/summarize" --init_from "$runs/$m/lm" \
          "${sum[@]}" "$@" &&
          stage summarize "$m" "$out/$m/summarize/.done" "${EVAL_S:-1200}" $py -m eval.summarize \
            --checkpoint "$runs/$m/summarize" --split test --batch_size 24 \
            --out "$out/$m/summarize" ;;
      cost) continue ;;
    esac
    rc=$?
    [ "$rc" -eq 3 ] && return 3  # out of time: the rerun continues here
    if [ "$rc" -ne 0 ] && [ "$s" = lm ]; then
      echo "$m: lm failed; its other stages are skipped (see $out/$m/lm.log)"
      return 1
    fi
  done
}

echo "compare: models [$models], stages [$stages], $slots at once on $gpus GPU(s); start $(date -u +%T)"
if has cost; then
  mkdir -p "$out/cost"
  cases=swa:4k:16:full,swa2:4k:16:full,landmark:4k:16:full,brt:4k:16:full,rpt:4k:16:full
  cases=$cases,drt:4k:16:full,drt_x2:4k:16:full
  stage cost cost "$out/cost/.done" bash -c "$py -m benchmarks.train_throughput --cases $cases \
    --steps 5 > '$out/cost/throughput.md'"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(
  $py -c "print(round(0.9 / -(-$slots // $gpus), 2))")}
read -ra all <<< "$models"
pids=()
for ((w = 0; w < slots; w++)); do
  (
    export CUDA_VISIBLE_DEVICES=$(( w % gpus ))
    late=0
    for ((i = w; i < ${#all[@]}; i += slots)); do
      model "${all[i]}" "$@"
      [ $? -eq 3 ] && late=1
    done
    exit $(( late ? 3 : 0 ))
  ) &
  pids+=($!)
done
unfinished=0
for pid in "${pids[@]}"; do
  wait "$pid"
  [ $? -eq 3 ] && unfinished=1
done
$py "$here/compare_tables.py" "$out" || exit 1
if [ "$unfinished" -eq 1 ]; then
  echo "compare: stopped by BUDGET_S at $(date -u +%T); run the same command again to continue"
  exit 3
fi
echo "compare: done at $(date -u +%T); tables in $out/compare.md"
