#!/usr/bin/env bash
# All runs of docs/results.md on a host with two GPUs, within one 10-minute command:
#   GPU 0: DRT ret x1 on single-needle passkey (4K..4M), alone: the headline run;
#   GPU 1: the sliding-window baseline (4K..64K), and DRT ret x1 and ret x2 on 2-hop NIAH
#          (4K..1M), three at once (the small models leave most of an H200 idle).
# usage: scripts/repro_all.sh OUT_DIR [key=value ...]   (env WARM_S, TRAIN_S, EVAL_S, PPL_S as
# scripts/repro_niah.sh)
set -uo pipefail
out=$1
shift
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 PYTHONUNBUFFERED=1
export WARM_S=${WARM_S-100}  # the 1K-token warm-up of docs/results.md; WARM_S= skips it
here=$(dirname "$0")
job() { local gpu=$1; shift; CUDA_VISIBLE_DEVICES=$gpu "$here/repro_niah.sh" "$@" & }
job 0 configs/niah_drt_x1_small.yaml single 4k,16k,64k,256k,1M,4M 50,50,50,50,20,10 "$out" "$@"
job 1 configs/niah_swa_small.yaml single 4k,16k,64k 50,50,50 "$out" "$@"
job 1 configs/niah_drt_x1_multihop_small.yaml multihop 4k,16k,64k,256k,1M 50,50,50,50,20 \
  "$out" "$@"
job 1 configs/niah_drt_x2_small.yaml multihop 4k,16k,64k,256k,1M 50,50,50,50,20 "$out" "$@"
wait
