#!/usr/bin/env bash
# The NIAH recipe of docs/results.md for the three retrieval/recurrence baselines, on one GPU in
# one 10-minute command: Landmark Attention, the Block-Recurrent Transformer and RPT with a fixed
# BM25 retriever, each trained once on single-needle and once on 2-hop tasks (six small models
# at once; the 4.7M-parameter models leave most of an H200 idle).
# usage: scripts/repro_baselines.sh OUT_DIR [key=value ...]   (env WARM_S, TRAIN_S, EVAL_S, PPL_S
# as scripts/repro_niah.sh; MODELS="landmark brt rpt" and TASKS="single multihop" pick subsets)
# RPT needs the BM25 idf of the recipe's corpus first (docs/data.md): this script computes it when
# data/pydocs/train/bm25_idf.npy is missing.
set -uo pipefail
out=$1
shift
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.14} PYTHONUNBUFFERED=1
export WARM_S=${WARM_S-100}
here=$(dirname "$0")
models=${MODELS:-landmark brt rpt}
tasks=${TASKS:-single multihop}
if [[ " $models " == *" rpt "* ]] && [ ! -f data/pydocs/train/bm25_idf.npy ]; then
  python3 -m train.prepare --bm25-idf data/pydocs/train --chunk_len 64 || exit 1
fi
job() {  # job TAG CONFIG TASK LENGTHS SAMPLES [overrides]
  local tag=$1 cfg=$2 task=$3 lengths=$4 samples=$5
  shift 5
  RUN_ROOT=/tmp/runs/$tag "$here/repro_niah.sh" "$cfg" "$task" "$lengths" "$samples" "$out/$tag" \
    "$@" &
}
for m in $models; do
  cfg=configs/niah_${m}_small.yaml
  if [[ " $tasks " == *" single "* ]]; then
    job "${m}_single" "$cfg" single 4k,8k,16k,64k,256k 50,50,50,50,20 "$@"
  fi
  if [[ " $tasks " == *" multihop "* ]]; then
    job "${m}_2hop" "$cfg" multihop 4k,16k,64k 50,50,50 data.niah_task=multihop "$@"
  fi
done
wait
