#!/usr/bin/env bash
# The thesis' comparison (chapter 6): every network of its Table 1 on one dataset, one W&B run
# each, grouped by dataset and named by network; each best checkpoint is then tested on the
# held-out subjects (the checkpoint of the run just trained), and compare_runs.py prints the table:
#   python compare_runs.py runs/study
#   scripts/thesis_study.sh iseg2017 /path/to/iSeg-2017-Training [extra train.py arguments]
#   scripts/thesis_study.sh mrbrains18 /path/to/MRBrainS18/training
# The DenseNets draw 2000 sub-volumes per epoch, as the thesis did (vs ~500 for V-Net/U-Net).
set -euo pipefail
dataset=${1:?dataset: iseg2017 or mrbrains18}
data_dir=${2:?the dataset folder}
shift 2
case $dataset in
  iseg2017) training_subjects=8 ;;
  mrbrains18) training_subjects=5 ;;
  *) echo "unknown dataset $dataset (iseg2017 or mrbrains18)" >&2; exit 2 ;;
esac
# One stream per modality: 2 streams on iSeg (T1, T2), 3 on MRBrainS18 (T1, IR, FLAIR).
for network in vnet vnet_light unet3d densenet3d densenet3d_late_fusion densenet3d_early_fusion; do
  extra=()
  if [[ $network == densenet3d* ]]; then
    extra=(--data.init_args.samples_per_volume $(( 2000 / training_subjects )))
  fi
  run=runs/study/$dataset/$network/$(date +%Y%m%d-%H%M%S)   # a new folder per run: nothing earlier is replaced
  common=(--config "configs/datasets/$dataset.yaml" --config "configs/experiments/$dataset.yaml"
          --config "configs/models/$network.yaml"
          --data.init_args.data_dir "$data_dir" --trainer.logger.init_args.name "$network"
          --checkpoint.dirpath "$run/checkpoints")
  python train.py fit "${common[@]}" "${extra[@]}" "$@"
  python train.py test "${common[@]}" --ckpt_path "$run/checkpoints/best.ckpt" "$@"
done
python compare_runs.py runs/study
