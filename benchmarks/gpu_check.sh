#!/usr/bin/env bash
# One prepared GPU check: the smoke and ELPV experiments on CUDA with bf16 and channels_last
# (epoch times, images/s), the LR-finder speed/memory benchmark, and a repeated range test.
# Usage (on a CUDA machine, from the repo root):
#   OUT=gpu_out ELPV_ROOT=/path/to/elpv-copy WEIGHTS=/path/to/lite0.safetensors bash benchmarks/gpu_check.sh
# ELPV_ROOT / WEIGHTS are only needed where the elpv-dataset / efficientnet-lite0 packages are missing.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
gpu="device=cuda precision=bf16 train.channels_last=true tracking=none train.progress=false"
elpv="experiment=elpv ${ELPV_ROOT:+data.root=$ELPV_ROOT} ${WEIGHTS:+model.pretrained=$WEIGHTS}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"

echo "== smoke (digits, tiny model) =="
$py -m lrlab experiment=smoke $gpu 2>&1 | tee "$OUT/smoke.log"
for size in 128 224; do
  echo "== elpv at ${size} px, 5 epochs =="
  $py -m lrlab $elpv $gpu data.image_size=$size epochs=5 2>&1 | tee "$OUT/elpv_${size}.log"
done
echo "== LR-finder speed (ratio to plain training) =="
$py benchmarks/lr_find_speed.py --device cuda --precision bf16 --steps 100 --experiments smoke \
  2>&1 | tee "$OUT/lr_find_speed.log"
$py benchmarks/lr_find_speed.py ${ELPV_ROOT:+data.root=$ELPV_ROOT} ${WEIGHTS:+model.pretrained=$WEIGHTS} \
  data.image_size=224 --device cuda --precision bf16 --steps 100 --experiments elpv 2>&1 | grep -v "^experiment" | tee -a "$OUT/lr_find_speed.log"
echo "== range test, 3 repeats, elpv 224 px =="
$py -m lrlab task=lr_find $elpv $gpu data.image_size=224 lr_finder.repeats=3 lr_finder.suggest=all \
  hydra.run.dir=outputs/gpu_lr_find 2>&1 | tee "$OUT/lr_find.log"
cp outputs/gpu_lr_find/lr_find.png "$OUT/lr_find_elpv224.png"
