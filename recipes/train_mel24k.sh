#!/usr/bin/env bash
# How checkpoints/mel24k.safetensors was trained: recipes/mel24k.toml (one spectral model, all four bands
# at once) on the CPU, bounded by wall time. Every random draw of step s is seeded by (seed, s) and the state
# is checkpointed every 100 steps, so `--resume` continues a stopped run exactly (run this script again).
# Then the EMA weights are stored in fp16 as the bundled file (recipes/bundle_mel24k.py).
#
#   bash recipes/train_mel24k.sh [SECONDS] [OUT]      # defaults: 7500 s of wall time, runs/mel24k
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BUDGET=${1:-7500}
OUT=${2:-runs/mel24k}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}   # one core: leaves the other free
python recipes/mel24k_split.py
RESUME=()
[ -f "$OUT/state.safetensors" ] && RESUME=(--resume)
python -m mbd.train recipes/mel24k.toml --out "$OUT" --max-seconds "$SECONDS_BUDGET" "${RESUME[@]}"
python recipes/bundle_mel24k.py "$OUT/model.safetensors"
