#!/usr/bin/env bash
# ELPV recipes on one GPU, 3 seeds each, all runs at once (one process per run; the GPU is
# launch-bound, so concurrent runs use it better than one after another), then one run alone for
# throughput. From the repo root on a CUDA machine:
#   OUT=gpu_out ELPV_ROOT=.gpu/elpv WEIGHTS=.gpu/lite0_fp16.safetensors bash benchmarks/gpu_elpv_recipes.sh
# Writes $OUT/summary.md (benchmarks/collect_runs.py over the runs), $OUT/runs.tar.gz (every run's
# lrlab.log, range-test plots and evaluation files) and $OUT/throughput.log.
# Wall times of the concurrent runs are not speed figures: they shared the GPU.
set -uo pipefail
set -f  # overrides hold brackets
OUT=${OUT:-gpu_out}
ROOT=${RUNS:-outputs/gpu_recipes}
LIMIT=${LIMIT:-480}  # seconds each run may take before it is stopped
# EXTRA: overrides appended to every recipe run (a CPU dry run: device=cpu precision=32 epochs=1 ...)
mkdir -p "$OUT" "$ROOT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
py=${PYTHON:-python3}
base="experiment=elpv_gpu device=cuda precision=bf16 train.channels_last=true tracking=none train.progress=false"
base="$base ${ELPV_ROOT:+data.root=$ELPV_ROOT} ${WEIGHTS:+model.pretrained=$WEIGHTS}"
aug="data.augment.scale=[0.96,1.0] data.augment.rotate=3 data.augment.brightness=0.1 data.augment.contrast=0.1"
declare -A recipes=(
  [a_preset]=""
  [b_aug]="$aug"
  [c_aug_ls_tta]="$aug train.label_smoothing=0.1 train.tta=hflip"
  [d_aug_ls_tta_60ep]="$aug train.label_smoothing=0.1 train.tta=hflip epochs=60"
  [e_cpu_recipe]="model.head=ordinal unfrozen_lr=5e-3 train.label_smoothing=0.1 train.tta=hflip"
)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
start=$SECONDS
for name in "${!recipes[@]}"; do
  for seed in 0 1 2; do
    dir="$ROOT/$name/seed$seed"
    mkdir -p "$dir"
    echo "$name seed $seed: lrlab $base ${recipes[$name]} seed=$seed" >>"$OUT/commands.txt"
    (
      t0=$SECONDS
      timeout "$LIMIT" $py -m lrlab $base ${recipes[$name]} seed=$seed ${EXTRA:-} hydra.run.dir="$dir" >"$dir/stdout.txt" 2>&1
      echo "rc $? wall $((SECONDS - t0)) s" >"$dir/wall.txt"
    ) &
  done
done
wait
set +f
echo "recipes done after $((SECONDS - start)) s" | tee -a "$OUT/gpu.txt"
$py benchmarks/collect_runs.py "$ROOT" | tee "$OUT/summary.md"
for f in "$ROOT"/*/*/wall.txt; do echo "$f: $(cat "$f")"; done | tee -a "$OUT/summary.md"
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' "$ROOT"
if [ $((SECONDS - start)) -lt 420 ]; then
  echo "== throughput: one run alone, full stage, 4 epochs, 300 px =="
  for bs in 64 128; do
    timeout 90 $py -m lrlab $base stages=full lr=1e-3 epochs=4 data.batch_size=$bs \
      hydra.run.dir="$ROOT/throughput_bs$bs" 2>&1 | grep -E "done in|epoch|^[0-9]" | tee -a "$OUT/throughput.log"
  done
fi
