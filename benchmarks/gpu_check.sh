#!/usr/bin/env bash
# Issue 13's GPU checks as one short script (a few minutes on a recent GPU), for a lent device:
# training steps (fp32, bf16, channels_last_3d, torch.compile), planned vs measured memory and a
# BraTS-size prediction; augmentation patches/s on CPU vs GPU. Run from the repository root; the
# tables go to $OUT (or stdout).
set -euo pipefail
PY=python3
if ! $PY -c "import torch, monai, pytorch_lightning; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 -m venv /tmp/v && /tmp/v/bin/pip install -q -r requirements.txt && PY=/tmp/v/bin/python
fi
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
$PY -m benchmarks.gpu_fast_path --steps 5 --compile | tee "${OUT:-/tmp}/gpu_fast_path.txt"
# Can the CPU loader keep up, or should augmentation run on the GPU (augment_on: device)?
$PY -m benchmarks.augmentation_device | tee "${OUT:-/tmp}/augmentation_device.txt"
# Issue 18: the demo in float32 against bf16-mixed, same seed (the test DSC must stay within 0.005).
$PY -m benchmarks.demo_precision --accelerator gpu | tee "${OUT:-/tmp}/demo_precision.txt"
# Issue 19: the contrast table at a GPU's budget (the label-map model's patches generated on the GPU).
$PY -m benchmarks.contrast_agnostic --out /tmp/contrast --accelerator gpu --epochs 48 \
  | tee "${OUT:-/tmp}/contrast_agnostic.txt"
