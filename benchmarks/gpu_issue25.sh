#!/usr/bin/env bash
# The GPU issue's checks in one device call, most important first, each section cut off at its
# share of a fixed budget so the call ends inside the device tool's limit and whatever finished
# comes back. Prepare here once (git-ignored, about 41 MiB), then run on the GPU:
#   python benchmarks/gpu_payload.py
#   device run: carry [".gpu", ".whl"], timeout_s 540, command: bash benchmarks/gpu_issue25.sh
# Check the plumbing here first, on the CPU at tiny sizes (same sections, same files):
#   DRY=1 OUT=/tmp/gpu_dry bash benchmarks/gpu_issue25.sh
# Sections: the gpu-marked tests (CUDA paths, NCCL with one process), step speed eager and under
# reduce-overhead (Lite0 300 px bf16, batch 32/128/256, lrlab vs the plain loop, first pass),
# profiles of the training step (host syncs, device busy share), the file loader alone with 0-15
# workers on the 16 cores, an ELPV 300 px run of 1+1 epochs (first-epoch time), the batch-size
# probe on it (largest batch within the memory margin, throughput knee), then
# max-autotune-no-cudagraphs if time is left.
# Writes $OUT/run.log (everything printed) and $OUT/results.tar.gz (JSON figures, logs, plots).
set -uo pipefail
set -f  # overrides hold brackets
OUT=${OUT:-gpu_out}
DRY=${DRY:-0}
BUDGET=${BUDGET:-$([ "$DRY" = 1 ] && echo 400 || echo 480)}  # seconds for all sections together
DETAIL=${DETAIL:-/tmp/lrlab_gpu_detail}
mkdir -p "$OUT"
rm -rf "$DETAIL" && mkdir -p "$DETAIL"
exec > >(tee -a "$OUT/run.log") 2>&1
trap 'tar -czf "$OUT/results.tar.gz" --exclude="*.pt" -C "$DETAIL" . 2>/dev/null' EXIT
start=$SECONDS
py=${PYTHON:-python3}

if [ "$DRY" = 1 ]; then  # the CPU, tiny sizes: checks the commands, not the figures
  device=cpu precision=32 size=64 steps=8 repeats=1 batches="8 16" prof_batch=16 workers="0 2"
  tests=(tests/test_gpu.py -k cpu)
  elpv_size="data.image_size=32"
else
  # batch 128 first: the targets are set there, and a cold compile per batch size may use up a section
  device=cuda precision=bf16 size=300 steps=30 repeats=3 batches="128 32 256" prof_batch=128
  workers="0 2 4 8 15"
  tests=(tests/test_gpu.py tests/test_optim.py tests/test_batch_size.py -m gpu)
  elpv_size=""
  if [ -d .whl ]; then  # the GPU image lacks Hydra, OmegaConf and Optuna: carried as wheels
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

section() {  # NAME SECONDS COMMAND...: at most SECONDS (or what the budget has left)
  local name=$1 limit=$2 remain t rc
  shift 2
  remain=$((BUDGET - (SECONDS - start)))
  ((limit > remain)) && limit=$remain
  if ((limit < 20)); then
    echo "== $name: skipped, ${remain}s of the budget left"
    return
  fi
  echo "== $name: at most ${limit}s, $((SECONDS - start))s into the budget"
  t=$SECONDS
  timeout -k 10 "$limit" "$@"
  rc=$?
  echo "== $name: rc $rc after $((SECONDS - t))s$([ $rc = 124 ] && echo ' (cut off at its limit)')"
}

size_args=(--device $device --precision $precision --image-size $size)
speed=($py benchmarks/step_speed.py "${size_args[@]}" --steps $steps --repeats $repeats --batch-sizes $batches)
profile=($py benchmarks/profile_step.py "${size_args[@]}" --batch $prof_batch --steps $((steps > 20 ? 20 : steps)))

echo "== machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; } |
  tee "$DETAIL/gpu.txt"
$py -c "import torch, timm, os; print('torch', torch.__version__, 'timm', timm.__version__, 'cpus', os.cpu_count())" |
  tee -a "$DETAIL/gpu.txt"

section "gpu tests" 170 $py -m pytest -n 0 -v --durations=0 -p no:cacheprovider -o addopts="" "${tests[@]}" \
  --junitxml="$DETAIL/tests.xml"
section "step speed, eager" 100 "${speed[@]}" --json "$DETAIL/step_speed_eager.json"
section "step speed, reduce-overhead" 120 "${speed[@]}" --compile reduce-overhead \
  --json "$DETAIL/step_speed_reduce-overhead.json"
section "profile, eager" 35 "${profile[@]}" --json "$DETAIL/profile_eager.json"
section "profile, reduce-overhead" 45 "${profile[@]}" --compile reduce-overhead \
  --json "$DETAIL/profile_reduce-overhead.json"
section "loader alone, ELPV 300 px" 50 $py benchmarks/loader_speed.py --root .gpu/elpv --device $device \
  --image-size $size --batch $prof_batch --batches $((steps / 3)) --workers $workers
section "ELPV 300 px, 1+1 epochs" 90 $py -m lrlab experiment=elpv_gpu data.root=.gpu/elpv \
  model.pretrained=.gpu/lite0_fp16.safetensors device=$device precision=$precision tracking=none \
  train.progress=false freeze_epochs=1 epochs=1 $elpv_size hydra.run.dir="$DETAIL/elpv"
section "batch-size probe, ELPV" 60 $py -m lrlab task=batch_size experiment=elpv_gpu data.root=.gpu/elpv \
  model.pretrained=.gpu/lite0_fp16.safetensors device=$device precision=$precision tracking=none \
  batch_finder.max_size=1024 batch_finder.min_steps=1 batch_finder.min_seconds=0.3 $elpv_size hydra.run.dir="$DETAIL/batch_size"
section "step speed, max-autotune-no-cudagraphs" 150 "${speed[@]}" --compile max-autotune-no-cudagraphs \
  --json "$DETAIL/step_speed_max-autotune-no-cudagraphs.json"
echo "== done: $((SECONDS - start))s of the ${BUDGET}s budget"
