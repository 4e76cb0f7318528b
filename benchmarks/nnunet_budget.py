"""nnU-Net v2 trained for a wall-clock budget, and its predictor: the nnU-Net arm of time_to_accuracy.

Runs under a Python that has ``nnunetv2`` (its own venv, torch pinned as ours), with
``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` set and the dataset planned and
preprocessed (``nnUNetv2_plan_and_preprocess -d 1 -c 3d_fullres``). It imports nothing of ours.

    python benchmarks/nnunet_budget.py train --marks 300 600 900 --steps 60 --log budget.jsonl
    python benchmarks/nnunet_budget.py predict --checkpoint checkpoint_budget_300.pth --input imagesTs --output pred

``train``: nnU-Net's own trainer (plan, network, loss with deep supervision, SGD + poly, data
augmentation, 1/3 foreground oversampling), shortened only in its bookkeeping: epochs of
``--iterations`` steps so that the poly schedule spans ``--steps`` steps, one validation batch
per epoch (its pseudo Dice; nnU-Net cannot run zero), and a checkpoint the first time the
training wall clock (from the first step) passes each mark. Then it stops.

``predict``: ``nnUNetPredictor`` with its defaults (Gaussian windows, step 0.5, mirroring) on
the CPU, for a budget checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from nnunetv2.inference import predict_from_raw_data
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class BudgetReached(Exception):
    """The last mark's checkpoint is written: training stops here."""


class BudgetTrainer(nnUNetTrainer):
    """nnU-Net's default trainer with wall-clock checkpoints (settings from the environment,
    because nnU-Net builds trainers from a fixed argument list)."""

    def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                 device: torch.device | None = None) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device or torch.device("cpu"))
        settings = json.loads(os.environ["BUDGET_TRAINER"])
        self.marks = sorted(settings["marks"])
        self.budget_log = Path(settings["log"])
        self.num_iterations_per_epoch = settings["iterations"]
        self.num_val_iterations_per_epoch = 1
        self.num_epochs = math.ceil(settings["steps"] / settings["iterations"])
        self.save_every = 10**9  # no checkpoint_latest; the budget checkpoints are the ones scored
        self.steps_done = 0
        self.started = 0.0

    def on_train_start(self) -> None:
        super().on_train_start()
        self.started = time.perf_counter()

    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        self.steps_done += 1
        elapsed = time.perf_counter() - self.started
        while self.marks and elapsed >= self.marks[0]:
            self.save_mark(self.marks.pop(0), elapsed)
        if not self.marks:
            raise BudgetReached
        return result

    def on_train_end(self) -> None:
        """The schedule ended before the last mark: the final model stands for the marks left."""
        super().on_train_end()
        elapsed = time.perf_counter() - self.started
        while self.marks:
            self.save_mark(self.marks.pop(0), elapsed)

    def save_mark(self, mark: int, elapsed: float) -> None:
        path = Path(self.output_folder) / f"checkpoint_budget_{mark}.pth"
        self.save_checkpoint(str(path))
        with self.budget_log.open("a") as log:
            log.write(json.dumps({"mark": mark, "steps": self.steps_done, "seconds": round(elapsed, 1),
                                  "checkpoint": str(path), "loadavg": os.getloadavg()}) + "\n")


def train(args: argparse.Namespace) -> None:
    os.environ["BUDGET_TRAINER"] = json.dumps({"marks": args.marks, "steps": args.steps, "log": str(args.log),
                                               "iterations": args.iterations})
    folder = Path(nnUNet_preprocessed) / args.dataset
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train adds to the plans before building a trainer
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = BudgetTrainer(plans, "3d_fullres", "all", dataset_json, torch.device("cpu"))
    try:
        trainer.run_training()
    except BudgetReached:
        print(f"budget reached after {trainer.steps_done} steps")
    # nnU-Net's augmentation workers are background processes: leave without waiting on them.
    os._exit(0)


def predict(args: argparse.Namespace) -> None:
    # The checkpoint names BudgetTrainer, which nnU-Net looks up in its own package; it builds the
    # same network as nnUNetTrainer.
    predict_from_raw_data.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.no_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    checkpoint = args.checkpoint.resolve()
    predictor.initialize_from_trained_model_folder(str(checkpoint.parent.parent), use_folds=("all",),
                                                   checkpoint_name=checkpoint.name)
    start = time.perf_counter()
    predictor.predict_from_files(str(args.input), str(args.output), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    print(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train")
    fit.add_argument("--dataset", default="Dataset001_Demo")
    fit.add_argument("--marks", type=int, nargs="+", required=True, help="wall-clock seconds of training")
    fit.add_argument("--steps", type=int, required=True, help="steps the poly schedule spans")
    fit.add_argument("--iterations", type=int, default=5, help="steps per nnU-Net epoch")
    fit.add_argument("--log", type=Path, required=True, help="JSON lines: one per mark")
    segment = commands.add_parser("predict")
    segment.add_argument("--checkpoint", type=Path, required=True)
    segment.add_argument("--input", type=Path, required=True, help="a folder of <case>_<channel>.nii.gz")
    segment.add_argument("--output", type=Path, required=True)
    segment.add_argument("--no-mirroring", action="store_true")
    args = parser.parse_args()
    {"train": train, "predict": predict}[args.command](args)


if __name__ == "__main__":
    main()
