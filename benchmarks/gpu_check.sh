#!/usr/bin/env bash
# One prepared GPU check (bf16, channels_last), from the repo root on a CUDA machine:
#   OUT=gpu_out ELPV_ROOT=/path/to/elpv-copy WEIGHTS=/path/to/lite0.safetensors bash benchmarks/gpu_check.sh [foundation|study]
# foundation (default): smoke and ELPV epoch times and images/s, the LR-finder speed/memory
#   benchmark, a repeated range test.
# study: the four ELPV recipes of experiments/elpv.md at 224 px and equal epochs (1 frozen + 5),
#   the ELPV range-test speed ratio, and cuDNN autotuning off.
# ELPV_ROOT / WEIGHTS are only needed where the elpv-dataset / efficientnet-lite0 packages are missing.
set -uo pipefail
section=${1:-foundation}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
gpu="device=cuda precision=bf16 train.channels_last=true tracking=none train.progress=false"
data="${ELPV_ROOT:+data.root=$ELPV_ROOT} ${WEIGHTS:+model.pretrained=$WEIGHTS}"
elpv="experiment=elpv $data"

if [ "$section" = foundation ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
  echo "== smoke (digits, tiny model) =="
  $py -m lrlab experiment=smoke $gpu 2>&1 | tee "$OUT/smoke.log"
  for size in 128 224; do
    echo "== elpv at ${size} px, full stage at 1e-3, 5 epochs =="
    $py -m lrlab $elpv $gpu stages=full lr=1e-3 data.image_size=$size epochs=5 2>&1 | tee "$OUT/elpv_${size}.log"
  done
  echo "== LR-finder speed (ratio to plain training) =="
  $py benchmarks/lr_find_speed.py --device cuda --precision bf16 --steps 100 --experiments smoke \
    2>&1 | tee "$OUT/lr_find_speed.log"
  $py benchmarks/lr_find_speed.py $data data.image_size=224 --device cuda --precision bf16 --steps 100 \
    --experiments elpv 2>&1 | grep -v "^experiment" | tee -a "$OUT/lr_find_speed.log"
  echo "== range test, 3 repeats, elpv 224 px =="
  $py -m lrlab task=lr_find $elpv $gpu data.image_size=224 lr_finder.repeats=3 lr_finder.suggest=all \
    hydra.run.dir=outputs/gpu_lr_find 2>&1 | tee "$OUT/lr_find.log"
  cp outputs/gpu_lr_find/lr_find.png "$OUT/lr_find_elpv224.png"
elif [ "$section" = study ]; then
  run="$py -m lrlab $elpv $gpu data.image_size=224"
  $run stages=fine_tune epochs=5 freeze_epochs=1 2>&1 | tee "$OUT/study_fine_tune.log"
  $run stages=fastai_fine_tune epochs=5 freeze_epochs=1 2>&1 | tee "$OUT/study_fastai_fine_tune.log"
  $run stages=full epochs=6 2>&1 | tee "$OUT/study_full.log"
  $run stages=head_only epochs=6 2>&1 | tee "$OUT/study_head_only.log"
  $py benchmarks/lr_find_speed.py $data data.image_size=224 --device cuda --precision bf16 --steps 100 \
    --experiments elpv 2>&1 | tee "$OUT/lr_find_speed_elpv.log"
  $run stages=full epochs=2 lr=1e-3 train.cudnn_benchmark=false 2>&1 | tee "$OUT/cudnn_off.log"
else
  echo "unknown section '$section': use foundation or study" >&2
  exit 2
fi
