#!/usr/bin/env bash
# Length-generalization reproduction on one GPU (docs/results.md): train one config on the
# LM + NIAH mix, then evaluate passkey accuracy at growing lengths and held-out perplexity.
# Everything fits one 10-minute GPU command per config.
#
# usage: scripts/repro_niah.sh CONFIG TASK LENGTHS SAMPLES OUT_DIR [key=value ...]
#   e.g. scripts/repro_niah.sh configs/niah_drt_x1_small.yaml single 4k,16k,64k,256k,1M,4M 40 out
# Needs the prepared corpus under data/pydocs/{train,validation} (docs/data.md §3.2).
set -euo pipefail
cfg=$1 task=$2 lengths=$3 samples=$4 out=$5
shift 5
name=$(basename "$cfg" .yaml)
run=/tmp/runs/$name
mkdir -p "$out/$name"
python3 -m train --config "$cfg" --output_dir "$run" --fresh "$@"
cp "$run/metrics.jsonl" "$out/$name/"
python3 -m eval.passkey --config "$cfg" --checkpoint "$run" --task "$task" --lengths "$lengths" \
  --samples "$samples" --corpus data/pydocs/validation --offload --out "$out/$name" "$@"
python3 -m eval.ppl --config "$cfg" --checkpoint "$run" --corpus data/pydocs/validation \
  --out "$out/$name" "$@" || echo "ppl evaluation failed"
