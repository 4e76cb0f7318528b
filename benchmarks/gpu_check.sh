#!/usr/bin/env bash
# The GPU checks, for a lent device. A session has 15 minutes of device time, the machine's start
# included, and a call at most 10, so the checks come in calls that fit, the most needed first,
# every section in a time box:
#   bash benchmarks/gpu_check.sh                 # call 1 = first: env speed augment (at most ~7.5 min)
#   bash benchmarks/gpu_check.sh cpu_bf16        # optional (measured on a 2-core Xeon with AMX, 2026-12-05; at most 4 min)
#   bash benchmarks/gpu_check.sh study           # a later session: the GPU study (at most 9.5 min)
#   bash benchmarks/gpu_check.sh full_speed / precision / contrast   # and the remaining tables
# Run from the repository root; the tables go to $OUT (or /tmp), written as they are printed, so a
# section stopped by its time box (or the call's limit) still returns what it measured.
#   env:        the GPU, torch, the host CPU's bf16 instructions; fine-tuning into a model on the GPU
#   speed:      issue 20's decisions: training steps per family at 128³ (fp32, bf16, bf16 +
#               channels_last_3d; torch.compile of the U-Net's two bf16 settings), planned vs
#               measured memory per family (~3 min)
#   augment:    augmentation patches/s on the CPU vs on the GPU, and the planned DynUNet's nnU-Net
#               recipe in steps/s, augmenting in 8 loader workers against on the device
#               (issue 20: device must be faster, or not offered) (~3 min)
#   cpu_bf16:   issue 18 on the host CPU, where it has native bf16 (AMX, AVX512-BF16): the demo in
#               float32 and bf16-mixed, same seed, test DSC within 0.005? (every core; ~2.5 min)
#   full_speed: the whole step table (also the thesis patch, torch.compile of every family) and a
#               BraTS-size prediction (~10 min)
#   study:      configs/studies/gpu_thesis.yaml on the demo data, one GPU, and its comparison (~8 min)
#   precision:  the demo on the GPU in float32 against bf16-mixed, same seed
#   contrast:   the any-contrast table at a GPU's budget (48 epochs)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
SECTIONS=${*:-first}
SECTIONS=${SECTIONS/first/env speed augment}
# Offline: what the machine lacks comes as wheels in .whl/ (benchmarks/gpu_wheels.sh, run where pip
# reaches a registry; carry .whl), installed without an index; nothing is fetched.
PY=python3
if ! $PY -c "import monai, nibabel, jsonargparse, submitit, nilearn" 2>/dev/null; then
  ls .whl/*.whl >/dev/null || { echo "gpu_check.sh: no .whl/; run benchmarks/gpu_wheels.sh first" >&2; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export WANDB_MODE=offline PYTHONUNBUFFERED=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no GPU'" || exit 2

boxed() {  # boxed SECONDS FILE COMMAND...: run COMMAND for at most SECONDS, its output also into $OUT/FILE
  local seconds=$1 file=$2; shift 2
  echo "== $file (time box ${seconds} s) ==" | tee -a "$OUT/$file"
  timeout --signal=INT --kill-after=15 "$seconds" "$@" 2>&1 | tee -a "$OUT/$file"
  local status=${PIPESTATUS[0]}
  [ "$status" = 124 ] && echo "== $file: stopped at its time box of ${seconds} s ==" | tee -a "$OUT/$file"
  return 0
}
demo_data() { $PY -m demo.synthetic_iseg --out data/demo/iSeg-2017-Training >/dev/null; }  # built once, then reused

for section in $SECTIONS; do
  start=$SECONDS
  case $section in
    env)
      { nvidia-smi -L; nproc; grep -m1 'model name' /proc/cpuinfo; $PY -c "import torch, pytorch_lightning as pl
from core.inference import fast_bf16
print('host CPU: native bf16', fast_bf16('cpu'), {k: v for k, v in torch.cpu.get_capabilities().items() if 'bf16' in k or 'amx' in k})
print('torch', torch.__version__, 'lightning', pl.__version__, torch.cuda.get_device_name())"
        $PY -m benchmarks.fine_tuning_device; } 2>&1 | tee "$OUT/env.txt" ;;
    speed)
      boxed 200 gpu_fast_path.txt $PY -m benchmarks.gpu_fast_path --patches 128 --steps 5 --compile unet3d --no-prediction ;;
    full_speed)
      boxed 580 gpu_fast_path_full.txt $PY -m benchmarks.gpu_fast_path --steps 5 --compile ;;
    augment)
      demo_data
      boxed 45 augmentation_device.txt $PY -m benchmarks.augmentation_device
      boxed 150 augment_on.txt $PY -m benchmarks.train_step --config configs/demo.yaml --config configs/models/dynunet.yaml \
        --config configs/recipes/nnunet.yaml --set data.init_args.num_workers 8 \
        --set model.network_kwargs "{levels: 5, filters: [32, 64, 128, 256, 320], deep_supervision: true, deep_supr_num: 2}" \
        --set data.init_args.patch_size "[80, 96, 80]" --set data.init_args.batch_size 2 \
        --arms bf16 --augment-on loader device --steps 300 --warmup 20 ;;
    cpu_bf16)
      demo_data
      boxed 240 demo_precision_cpu.txt $PY -m benchmarks.demo_precision --accelerator cpu ;;
    study)
      demo_data
      # max_time counts training only: start-up, validation and the test come on top (~20 s a cell).
      boxed 560 gpu_thesis.txt $PY study.py configs/studies/gpu_thesis.yaml --gpus 0 --output /tmp/gpu_thesis \
        --trainer.logger false
      cp /tmp/gpu_thesis/comparison.* "$OUT/" 2>/dev/null ;;  # the cells' folders stay there: too many files
    precision)
      demo_data
      boxed 300 demo_precision.txt $PY -m benchmarks.demo_precision --accelerator gpu ;;
    contrast)
      demo_data
      boxed 580 contrast_agnostic.txt $PY -m benchmarks.contrast_agnostic --out /tmp/contrast --accelerator gpu \
        --epochs 48 ;;
    *) echo "gpu_check.sh: unknown section $section (first, env, speed, augment, cpu_bf16, full_speed, study," \
         "precision, contrast)" >&2; exit 2 ;;
  esac
  echo "== $section: $((SECONDS - start)) s ==" | tee -a "$OUT/sections.txt"
done
