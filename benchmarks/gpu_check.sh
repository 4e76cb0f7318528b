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
