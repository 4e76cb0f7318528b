#!/usr/bin/env bash
# The GPU checks of issue 13, one short script (about 5 minutes on a recent GPU): training steps,
# planned vs measured memory, BraTS-size prediction. Run from the repository root on the device.
set -euo pipefail
python3 -m venv /tmp/v && /tmp/v/bin/pip install -q -r requirements.txt
/tmp/v/bin/python -m benchmarks.gpu_fast_path --steps 5 --compile | tee "$OUT/gpu_fast_path.txt"
