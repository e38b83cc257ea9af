#!/usr/bin/env bash
# The ELPV study on one GPU (bf16, channels_last), 224 px: the four recipes of experiments/elpv.md
# at equal epochs (1 frozen + 5 unfrozen = 6), the LR-finder speed ratio, and cuDNN autotuning
# off vs on. Same ELPV_ROOT / WEIGHTS / OUT conventions as gpu_check.sh.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
data="${ELPV_ROOT:+data.root=$ELPV_ROOT} ${WEIGHTS:+model.pretrained=$WEIGHTS}"
run="$py -m lrlab experiment=elpv $data device=cuda precision=bf16 tracking=none train.progress=false data.image_size=224"
$run stages=fine_tune epochs=5 freeze_epochs=1 2>&1 | tee "$OUT/study_fine_tune.log"
$run stages=fastai_fine_tune epochs=5 freeze_epochs=1 2>&1 | tee "$OUT/study_fastai_fine_tune.log"
$run stages=full epochs=6 2>&1 | tee "$OUT/study_full.log"
$run stages=head_only epochs=6 2>&1 | tee "$OUT/study_head_only.log"
$py benchmarks/lr_find_speed.py $data data.image_size=224 --device cuda --precision bf16 --steps 100 \
  --experiments elpv 2>&1 | tee "$OUT/lr_find_speed_elpv.log"
$run stages=full epochs=2 lr=1e-3 train.cudnn_benchmark=false 2>&1 | tee "$OUT/cudnn_off.log"
