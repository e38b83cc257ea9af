#!/usr/bin/env bash
# Issue 13's GPU figures in one run: images/s of lrlab's training and range test against a plain
# hand-written loop (benchmarks/step_speed.py), Lite0 at 300 px, bf16, channels_last, batch
# 128 (the targets' batch, first) / 32 / 256, eager and with each torch.compile mode worth trying, plus the first-pass
# overhead. From the repo root on a CUDA machine (nothing else needed: random images, no weights):
#   OUT=gpu_out bash benchmarks/gpu_step_speed.sh
# Writes $OUT/step_speed_<mode>.txt and .json, and $OUT/gpu.txt.
set -uo pipefail
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-60}
LIMIT=${LIMIT:-170}  # seconds each mode may take
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
for mode in eager reduce-overhead max-autotune-no-cudagraphs; do
  compile=""
  [ "$mode" != eager ] && compile="--compile $mode"
  timeout "$LIMIT" $py benchmarks/step_speed.py --device cuda --precision bf16 --image-size 300 \
    --steps "$STEPS" --batch-sizes 128 32 256 $compile --json "$OUT/step_speed_$mode.json" \
    2>&1 | tee "$OUT/step_speed_$mode.txt"
done
