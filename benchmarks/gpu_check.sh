#!/usr/bin/env bash
# The GPU checks, for a lent device, as sections that each fit one call (a few minutes each):
#   bash benchmarks/gpu_check.sh speed augment study   # issue 20: step table, memory, augmentation, the GPU study
#   bash benchmarks/gpu_check.sh precision contrast    # issues 18 and 19
# (no section: all five). Run from the repository root; the tables go to $OUT (or /tmp).
#   speed:     training steps (fp32, bf16, channels_last_3d, torch.compile) per family, planned vs
#              measured memory per family, a BraTS-size prediction
#   augment:   augmentation patches/s CPU vs GPU, patch by patch and batched, and whether the batched
#              path makes the host wait; the planned DynUNet's nnU-Net recipe in steps/s, augmenting
#              in 8 loader workers against on the device (issue 20: device must be faster, or not
#              offered) (~3 min)
#   study:     configs/studies/gpu_thesis.yaml on the demo data, one GPU, and its comparison (~8 min)
#   precision: the demo in float32 against bf16-mixed, same seed (test DSC within 0.005?)
#   contrast:  the any-contrast table at a GPU's budget (48 epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
SECTIONS=${*:-speed augment study precision contrast}
# Offline: what the machine lacks comes as wheels in .whl/ (benchmarks/gpu_wheels.sh, run where pip
# reaches a registry; carry .whl), installed without an index; nothing is fetched.
PY=python3
if ! $PY -c "import monai, nibabel, jsonargparse, submitit, nilearn" 2>/dev/null; then
  ls .whl/*.whl >/dev/null || { echo "gpu_check.sh: no .whl/; run benchmarks/gpu_wheels.sh first" >&2; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export WANDB_MODE=offline
$PY -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.__version__, torch.cuda.get_device_name())"
for section in $SECTIONS; do
  case $section in
    speed)
      $PY -m benchmarks.gpu_fast_path --steps 5 --compile | tee "$OUT/gpu_fast_path.txt" ;;
    augment)
      $PY -m benchmarks.augmentation_device | tee "$OUT/augmentation_device.txt"
      $PY -m demo.synthetic_iseg --out data/demo/iSeg-2017-Training
      $PY -m benchmarks.train_step --config configs/demo.yaml --config configs/models/dynunet.yaml \
        --config configs/recipes/nnunet.yaml --set data.init_args.num_workers 8 \
        --set model.network_kwargs "{levels: 5, filters: [32, 64, 128, 256, 320], deep_supervision: true, deep_supr_num: 2}" \
        --set data.init_args.patch_size "[80, 96, 80]" --set data.init_args.batch_size 2 \
        --arms bf16 --augment-on loader device --steps 300 --warmup 20 | tee "$OUT/augment_on.txt" ;;
    study)
      $PY -m demo.synthetic_iseg --out data/demo/iSeg-2017-Training
      # max_time counts training only: start-up, validation and the test come on top (~20 s a cell).
      time $PY study.py configs/studies/gpu_thesis.yaml --gpus 0 --output "$OUT/gpu_thesis" \
        --trainer.logger false | tee "$OUT/gpu_thesis.txt" ;;
    precision)
      $PY -m benchmarks.demo_precision --accelerator gpu | tee "$OUT/demo_precision.txt" ;;
    contrast)
      $PY -m benchmarks.contrast_agnostic --out /tmp/contrast --accelerator gpu --epochs 48 \
        | tee "$OUT/contrast_agnostic.txt" ;;
    *) echo "gpu_check.sh: unknown section $section (speed, augment, study, precision, contrast)" >&2; exit 2 ;;
  esac
done
