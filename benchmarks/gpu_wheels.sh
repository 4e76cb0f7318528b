#!/usr/bin/env bash
# The wheels an offline GPU machine lacks for benchmarks/gpu_check.sh, fetched HERE (where pip can
# reach a registry) into .whl/ for Python 3.12 on x86-64 Linux; the GPU machine installs them with
# --no-index (never from the network). Its image already has torch, Lightning, torchmetrics,
# scipy, einops, cloudpickle and matplotlib; SimpleITK, wandb and pybids are imported only where
# used, so they are not needed.
#   bash benchmarks/gpu_wheels.sh && git check-ignore -q .whl || echo /.whl/ >> .git/info/exclude
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  monai==1.6.1 nibabel==5.4.2 "jsonargparse==4.53.0" docstring-parser==0.18.0 typeshed-client==2.15.0 \
  importlib-resources==7.1.0 submitit==1.5.4 nilearn==0.14.1  # nilearn: the demo data's template
ls .whl
