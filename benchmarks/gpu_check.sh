#!/usr/bin/env bash
# Released-size decode speed and memory on one CUDA GPU (e.g. H100/H200), in one run of under 8 minutes.
#
# Needs torch with CUDA, numpy, safetensors and tqdm. On a machine without julius and without network, put
# the julius wheel in the git-ignored .whl/ first (the benchmarks import nothing else that may be missing;
# encodec, soundfile and librosa are not imported by them):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl julius==0.2.8
#
# then, from the repository root: OUT=gpu_results bash benchmarks/gpu_check.sh
# Everything is written to $OUT (gpu_check.md: the tables; nvidia-smi.txt). Each step has its own timeout, so
# one hang cannot eat the others' time.
#   1. 10 s, batch 1, 20 DDPM steps: faithful vs fused vs fused-bf16 vs fused-compile (compile time shown)
#   2. 8 clips of 10 s in one batch with the fastest mode of step 1 (faithful again as the reference)
#   3. a chunked 60 s decode (10 s chunks, fused float32) against a 10 s one, re-EQ included, and
#      2 rounds of 30 s chunked vs 3 x 10 s unchunked interleaved
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
if ! python3 -c "import julius" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$OUT/site" .whl/*.whl || exit 1
    export PYTHONPATH="$OUT/site"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
md="$OUT/gpu_check.md"
: >"$md"
step() { # step TIMEOUT TITLE COMMAND...: run one benchmark, append its command and table to $md
    local limit=$1 title=$2
    shift 2
    printf '\n## %s\n\n`%s`\n\n' "$title" "$*" | tee -a "$md"
    timeout "$limit" "$@" 2>&1 | tee -a "$md"
}
device=${DEVICE:-cuda} size=${SIZE:-released} # DEVICE=cpu SIZE=tiny: a dry run of this script on a CPU
speed=(python3 benchmarks/decode_speed.py --device "$device" --size "$size" --seconds 10 --steps 20)

step 220 "10 s, batch 1" "${speed[@]}" --mode-timeout 120 --modes faithful,fused,fused-bf16,fused-compile
fastest=$(awk -F'|' '$2 ~ /fused/ && $3 + 0 > 0 {print $3 + 0, $2}' "$md" | sort -g | head -n1 | awk '{print $2}')
step 130 "8 x 10 s in one batch, fastest mode: ${fastest:=fused-bf16}" "${speed[@]}" --batch 8 --mode-timeout 100 \
    --modes "$fastest"
step 110 "chunked 60 s" python3 benchmarks/long_audio.py --device "$device" --size "$size" --steps 20 --long 60 \
    --repeats 2 --rounds 2 --pieces 3
