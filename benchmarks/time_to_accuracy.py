"""Test DSC after equal training wall time: our demo recipe, the nnU-Net-grade recipe, nnU-Net v2.

    python -m benchmarks.time_to_accuracy --nnunet-python /path/to/venv/bin/python --marks 300 600 900

The demo data (``python -m demo.synthetic_iseg``), its split (train 1-6, test 9-10; nobody
validates during the budget) and one scorer (``evaluate.py``'s) for every arm:

- ``demo``: ``configs/demo.yaml`` (3D U-Net, 8 base maps, 48^3 patches, AdamW, Dice + CE);
- ``nnunet_recipe_unet``: the demo's U-Net with two deep-supervision heads, trained with
  ``configs/recipes/nnunet.yaml`` (SGD Nesterov, poly, class-balanced patches, nnU-Net's
  augmentation, mirroring at prediction);
- ``nnunet_recipe_planned``: the same recipe on ``plan.py``'s plan (DynUNet, 80x96x80, batch 2);
- ``nnunet_v2``: nnU-Net v2's own trainer, plan and predictor (``benchmarks/nnunet_budget.py``
  in a venv with ``nnunetv2``), trained on the same six subjects (fold ``all``).

Each arm trains once, in turn (never two at a time); a checkpoint is written the first time its
training wall clock (from its first step, after caching/preprocessing) passes each mark, and the
run stops at the last. Every schedule is set to end near the last mark (``Arm.steps``: the steps
an arm does in 900 s on the 2-core CPU, scaled to the last mark), so the earlier marks are
snapshots of that run, not runs of their own; a schedule that ends before the last mark leaves
its final model for the marks not reached (the log keeps the seconds it took).
Each checkpoint then segments subjects 9 and 10 with its system's default inference (ours: the
checkpoint's windows, mirroring where the recipe says; nnU-Net: its predictor, mirroring on)
and ``evaluate.py`` scores the files. Results go to ``--out/results.json`` as they come (a rerun
skips what is done) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytorch_lightning as pl
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data/demo/iSeg-2017-Training"
TRAIN_SUBJECTS = ["1", "2", "3", "4", "5", "6"]
TEST_SUBJECTS = ["9", "10"]
REFERENCE_SECONDS = 900  # Arm.steps figures are for this budget


class BudgetCheckpoints(pl.Callback):
    """Saves ``budget-<mark>.ckpt`` when the training wall clock first passes each mark (seconds
    from the start of training) and stops training after the last; one JSON line per mark."""

    def __init__(self, marks: list[int], dirpath: str, log: str) -> None:
        self.marks = sorted(marks)
        self.dirpath = Path(dirpath)
        self.log_path = Path(log)
        self.started = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        elapsed = time.perf_counter() - self.started
        while self.marks and elapsed >= self.marks[0]:
            self.save_mark(trainer, self.marks.pop(0), elapsed)
        if not self.marks:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The schedule ended before the last mark: the final model stands for the marks left."""
        elapsed = time.perf_counter() - self.started
        while self.marks:
            self.save_mark(trainer, self.marks.pop(0), elapsed)

    def save_mark(self, trainer: pl.Trainer, mark: int, elapsed: float) -> None:
        path = self.dirpath / f"budget-{mark}.ckpt"
        trainer.save_checkpoint(path)
        with self.log_path.open("a") as log:
            log.write(json.dumps({"mark": mark, "steps": trainer.global_step, "seconds": round(elapsed, 1),
                                  "checkpoint": str(path), "loadavg": os.getloadavg()}) + "\n")


@dataclass
class Arm:
    name: str
    description: str
    steps: int  # optimiser steps the schedule spans for REFERENCE_SECONDS
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    flips: bool = False

    @property
    def is_nnunet(self) -> bool:
        return self.name == "nnunet_v2"


def arms(plan: Path) -> list[Arm]:
    """The four arms, in the order they run. Step figures: measured rates on the 2-core CPU."""
    recipe = ["configs/demo.yaml", "configs/recipes/nnunet.yaml"]
    return [
        Arm("demo", "our demo recipe (U-Net 8 maps, 48^3, AdamW)", 1350, ["configs/demo.yaml"]),
        Arm("nnunet_recipe_unet", "nnU-Net-grade recipe, demo U-Net + 2 deep-supervision heads", 1150, recipe,
            ["--model.network_kwargs.deep_supervision=2"], flips=True),
        Arm("nnunet_recipe_planned", "nnU-Net-grade recipe, plan.py's DynUNet 80x96x80 batch 2", 58,
            ["configs/demo.yaml", str(plan), "configs/recipes/nnunet.yaml"], flips=True),
        Arm("nnunet_v2", "nnU-Net v2 (its trainer, plan and predictor)", 60, flips=True),
    ]


def budget_config(attempt: Path, log: Path, marks: list[int], steps: int) -> Path:
    """The YAML composed last: no validation, no logger, the schedule's length, the budget callback."""
    config = {
        "trainer": {"max_epochs": -1, "max_steps": steps, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "logger": False, "default_root_dir": str(attempt),
                    "callbacks": [{"class_path": "benchmarks.time_to_accuracy.BudgetCheckpoints",
                                   "init_args": {"marks": marks, "dirpath": str(attempt), "log": str(log)}}]},
        "checkpoint": {"dirpath": str(attempt / "checkpoints"), "save_last": False},
    }
    path = attempt / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def nnunet_env(root: Path) -> dict[str, str]:
    return dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
                nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="2")


def prepare_nnunet(python: Path, root: Path) -> None:
    """The demo's training subjects as nnU-Net's Dataset001, fingerprinted, planned, preprocessed."""
    if (root / "preprocessed/Dataset001_Demo/nnUNetPlans.json").exists():
        return
    from benchmarks import nnunet_dataset

    nnunet_dataset.main([str(DATA), str(root / "raw"), "--subjects", *TRAIN_SUBJECTS,
                         "--test-subjects", *TEST_SUBJECTS])
    bin_dir = python.parent
    subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "1", "-c", "3d_fullres", "-np", "2"],
                   env=nnunet_env(root), check=True)


def train(arm: Arm, out: Path, marks: list[int], nnunet_python: Path | None) -> dict[str, Any]:
    folder = out / arm.name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "budget.jsonl"
    done = read_log(log)
    if {entry["mark"] for entry in done} >= set(marks):
        return {"trained": "earlier"}
    log.unlink(missing_ok=True)  # an interrupted run starts over: its marks would not be comparable
    attempt = folder / time.strftime("%Y%m%d-%H%M%S")  # this attempt's checkpoints, beside earlier ones
    attempt.mkdir()
    steps = round(arm.steps * max(marks) / REFERENCE_SECONDS)
    if arm.is_nnunet:
        if nnunet_python is None:
            raise SystemExit("the nnunet_v2 arm needs --nnunet-python")
        prepare_nnunet(nnunet_python, out / "nnunet")
        command = [str(nnunet_python), str(REPO / "benchmarks/nnunet_budget.py"), "train", "--marks",
                   *map(str, marks), "--steps", str(steps), "--log", str(log)]
        env = nnunet_env(out / "nnunet")
    else:
        configs = [*arm.configs, str(budget_config(attempt, log, marks, steps))]
        command = [sys.executable, "train.py", "fit", *(f"--config={c}" for c in configs), *arm.overrides]
        env = dict(os.environ, WANDB_MODE="disabled")
    load_before = os.getloadavg()
    start = time.perf_counter()
    print(f"== {arm.name}: {' '.join(command)}", flush=True)
    with (folder / "train.log").open("w") as output:
        subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)
    return {"wall_seconds": round(time.perf_counter() - start, 1), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "scheduled_steps": steps}


def segment_ours(checkpoint: Path, output: Path, flips: bool) -> None:
    from core.segmenter import load_segmenter

    segmenter = load_segmenter(checkpoint, "cpu")
    subjects = [segmenter.subject([DATA / f"subject-{n}-{m}.hdr" for m in ("T1", "T2")]) for n in TEST_SUBJECTS]
    segmenter.segment_to_folder(subjects, output, flips=flips, overwrite=True, progress=False)


def segment_nnunet(python: Path, root: Path, checkpoint: Path, output: Path) -> None:
    """nnU-Net's predictor, then its consecutive classes back to iSeg's label values."""
    from core.dataset_labels import ISEG
    from core.io import save_nifti_atomically

    raw = output / "nnunet_classes"
    subprocess.run([str(python), str(REPO / "benchmarks/nnunet_budget.py"), "predict", "--checkpoint",
                    str(checkpoint), "--input", str(root / "raw/Dataset001_Demo/imagesTs"), "--output", str(raw)],
                   env=nnunet_env(root), check=True, stdout=subprocess.DEVNULL)
    for subject in TEST_SUBJECTS:
        image = nib.load(raw / f"subject-{subject}.nii.gz")
        labels = ISEG.decode(np.asarray(image.dataobj).astype(np.int64))
        written = nib.Nifti1Image(labels.astype(np.uint8), image.affine)
        save_nifti_atomically(written, output / f"subject-{subject}.nii.gz")


def score(folder: Path) -> dict[str, float]:
    from core.metrics import summarise
    from evaluate import evaluate_folders

    rows = evaluate_folders(folder, DATA, "iseg")
    dice = {r["structure"]: r["mean"] for r in summarise(rows) if r["metric"] == "dice"}
    dice["mean"] = float(np.mean(list(dice.values())))
    dice["subjects"] = len({r["subject"] for r in rows})
    return dice


def table(results: dict[str, Any], arm_list: list[Arm], marks: list[int]) -> str:
    lines = ["| arm | budget | steps | CSF | GM | WM | mean | load avg (1 min) |", "|---|---|---|---|---|---|---|---|"]
    for arm in arm_list:
        for mark in marks:
            entry = results.get(arm.name, {}).get("marks", {}).get(str(mark))
            if not entry or "dice" not in entry:
                continue
            d = entry["dice"]
            lines.append(f"| {arm.name} | {mark // 60} min | {entry['steps']} | {d['CSF']:.3f} | {d['GM']:.3f} | "
                         f"{d['WM']:.3f} | {d['mean']:.3f} | {entry['loadavg'][0]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marks", type=int, nargs="+", default=[300, 600, 900], help="budgets, seconds")
    parser.add_argument("--arms", nargs="+", help="a subset, by name (default: all four)")
    parser.add_argument("--nnunet-python", type=Path, help="a Python with nnunetv2 (for the nnunet_v2 arm)")
    parser.add_argument("--out", type=Path, default=REPO / "runs/time_to_accuracy")
    args = parser.parse_args(argv)
    if not DATA.exists():
        raise SystemExit(f"no demo data at {DATA}: run python -m demo.synthetic_iseg first")
    args.out.mkdir(parents=True, exist_ok=True)
    plan = args.out / "plan.yaml"
    if not plan.exists():
        subprocess.run([sys.executable, "plan.py", "--config=configs/demo.yaml", "--family", "dynunet",
                        "--gpu-memory", "8", "--output", str(plan)], cwd=REPO, check=True)
    arm_list = [a for a in arms(plan) if not args.arms or a.name in args.arms]
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for arm in arm_list:  # every training first, then the scoring: no inference runs beside a budget
        results.setdefault(arm.name, {"description": arm.description, "marks": {}})
        results[arm.name].update(train(arm, args.out, args.marks, args.nnunet_python))
        results_path.write_text(json.dumps(results, indent=1))
    for arm in arm_list:
        for entry in read_log(args.out / arm.name / "budget.jsonl"):
            scored = results[arm.name]["marks"].get(str(entry["mark"]), {})
            if "dice" in scored and scored.get("checkpoint") == entry["checkpoint"]:
                continue
            folder = args.out / arm.name / f"predictions-{entry['mark']}"
            if arm.is_nnunet:
                segment_nnunet(args.nnunet_python, args.out / "nnunet", Path(entry["checkpoint"]), folder)
            else:
                segment_ours(Path(entry["checkpoint"]), folder, arm.flips)
            results[arm.name]["marks"][str(entry["mark"])] = {**entry, "dice": score(folder)}
            results_path.write_text(json.dumps(results, indent=1))
    print(table(results, arm_list, args.marks))


if __name__ == "__main__":
    main()
