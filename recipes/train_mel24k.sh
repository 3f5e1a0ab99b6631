#!/usr/bin/env bash
# How checkpoints/mel24k.safetensors was trained: recipes/mel24k.toml on 2 CPU cores, two bands at a time
# (one thread each), each band capped at BAND_SECONDS of wall time. A band stopped by the cap keeps its last
# checkpoint (every 100 steps); `--steps N` with the step it reached reproduces it exactly (every random draw
# of step s is seeded by (seed, band, s)). Then the bands are assembled and the U-Net weights stored in fp16.
#
#   bash recipes/train_mel24k.sh [BAND_SECONDS] [OUT]      # defaults: 1380 s (23 min), runs/mel24k
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_BAND=${1:-1380}
OUT=${2:-runs/mel24k}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python recipes/mel24k_split.py
band() { timeout "$SECONDS_PER_BAND" python -m mbd.train recipes/mel24k.toml --band "$1" --out "$OUT" || true; }
(band 0; band 3) > "$OUT/log_bands03.txt" 2>&1 &
(band 1; band 2) > "$OUT/log_bands12.txt" 2>&1 &
wait
python -m mbd.train assemble "$OUT"/band{0,1,2,3}/band*.safetensors -o "$OUT/model.safetensors"
python - "$OUT/model.safetensors" checkpoints/mel24k.safetensors <<'PY'
import sys
from mbd import checkpoint
config, tensors = checkpoint.read_ours(sys.argv[1])
half = {k: v.half() if ".unet." in k else v for k, v in tensors.items()}  # processor statistics stay float32
checkpoint.save(sys.argv[2], config, half)
print(f"wrote {sys.argv[2]}")
PY
