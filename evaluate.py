"""Score a folder of predicted segmentations against the ground truth, challenge-style.

    python evaluate.py --pred runs/x/predictions --gt /data/MICCAI_BraTS2020_TrainingData --dataset brats

Predictions are ``<subject>_seg.nii.gz`` (what the prediction writer produces). ``--gt`` is
either the dataset folder as the challenge ships it (subjects found by the dataset's
DataModule) or a flat folder of ``<subject>[_seg|_label|...].nii.gz`` files. Writes
``scores.csv`` (one row per subject and structure), ``summary.csv`` (mean, std and count per
structure and metric; NaN values left out) and ``summary.md`` (also printed). Metric
definitions and the empty-mask conventions: :mod:`lightning_modules.metrics`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from lightning_modules.metrics import score_subject

PRED_SUFFIX = "_seg.nii.gz"
NIFTI = re.compile(r"^(?P<stem>.+?)(?:[_-](?:seg|segm|label|labels|segmentation|gt|mask))?\.nii(?:\.gz)?$",
                   re.IGNORECASE)
COLUMNS = {"dice": "dice", "hd95": "hd95_mm", "assd": "assd_mm", "avd": "avd_percent"}

# dataset -> (structure -> label values, ignored label values)
DATASETS: dict[str, tuple[dict[str, list[int]], list[int]]] = {
    "iseg": ({"CSF": [10], "GM": [150], "WM": [250]}, []),
    "mrbrains18": ({"cortical_GM": [1], "basal_ganglia": [2], "WM": [3], "WM_lesions": [4], "CSF": [5],
                    "ventricles": [6], "cerebellum": [7], "brain_stem": [8]}, [9, 10]),
    "mrbrains18_thesis": ({"CSF": [5, 6], "GM": [1, 2], "WM": [3, 4]}, [7, 8, 9, 10]),
    "brats": ({"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}, []),
    "labels": ({}, []),
}


class EvaluationError(ValueError):
    """Inputs that cannot be scored (missing subjects, grids that disagree)."""


def natural_key(text: str) -> list[int | str]:
    """Sort "2" before "10" (subject ids are numbers in most challenges)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def parse_labels(labels: str | Mapping[int, str]) -> dict[str, list[int]]:
    """``"0:background,1:lesion"`` (or a dict) -> structures of the non-background values."""
    if isinstance(labels, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in labels.split(","))):
            value, sep, name = item.partition(":")
            if not sep or not name.strip():
                raise EvaluationError(f"--labels: expected value:name, got {item!r}")
            pairs[int(value)] = name.strip()
        labels = pairs
    structures = {name: [int(value)] for value, name in labels.items()
                  if int(value) != 0 and name.lower() != "background"}
    if not structures:
        raise EvaluationError("--labels names no non-background value")
    return structures


def prediction_files(pred_dir: Path) -> dict[str, Path]:
    files = {p.name[: -len(PRED_SUFFIX)]: p for p in pred_dir.glob(f"*{PRED_SUFFIX}")}
    if not files:
        raise EvaluationError(f"{pred_dir}: no prediction files (*{PRED_SUFFIX})")
    return files


def truth_files(gt_dir: Path, dataset: str) -> dict[str, Path]:
    """Subject id -> ground-truth file: top-level NIfTI files named by subject, else the
    dataset's own layout found by its DataModule."""
    flat = {}
    for path in sorted(gt_dir.iterdir()):
        match = NIFTI.match(path.name)
        if path.is_file() and match:
            if match["stem"] in flat:
                raise EvaluationError(f"{gt_dir}: two ground-truth files for {match['stem']}: "
                                      f"{flat[match['stem']].name}, {path.name}")
            flat[match["stem"]] = path
    if flat:
        return flat
    import datamodules  # heavy, and only needed for the challenge layouts

    modules = {"iseg": datamodules.ISeg2017DataModule, "mrbrains18": datamodules.MRBrainS18DataModule,
               "mrbrains18_thesis": datamodules.MRBrainS18DataModule, "brats": datamodules.BraTSDataModule}
    if dataset not in modules:
        raise EvaluationError(f"{gt_dir}: no NIfTI files at the top level (dataset {dataset!r} has no known layout)")
    subjects = modules[dataset](str(gt_dir), cache_dir=None).subjects()
    return {sid: s.label for sid, s in subjects.items() if s.label is not None}


def load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(integer label map (D, H, W), affine, spacing in mm) of one file."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise EvaluationError(f"{path}: expected a 3D label map, got shape {data.shape}")
    return np.rint(data).astype(np.int64), np.asarray(image.affine, dtype=float), tuple(
        float(z) for z in image.header.get_zooms()[:3])


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                     labels: str | Mapping[int, str] | None = None, allow_missing: bool = False,
                     affine_tolerance: float = 1e-3) -> list[dict]:
    """Score every ``<subject>_seg.nii.gz`` of ``pred_dir`` against its ground truth.

    Returns one dict per subject and structure: subject, structure, dice, hd95_mm, assd_mm,
    avd_percent. Subjects on one side only are an error (a warning and skipped with
    ``allow_missing``), as are prediction and truth of different shape or affine.
    """
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    structures, ignore = DATASETS[dataset]
    if dataset == "labels":
        if labels is None:
            raise EvaluationError("--dataset labels needs --labels, e.g. '0:background,1:lesion'")
        structures = parse_labels(labels)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise EvaluationError(f"{folder}: not a folder")
    predictions, truths = prediction_files(pred_dir), truth_files(gt_dir, dataset)
    no_truth = sorted(set(predictions) - set(truths), key=natural_key)
    no_prediction = sorted(set(truths) - set(predictions), key=natural_key)
    if no_truth or no_prediction:
        message = (f"subjects without ground truth in {gt_dir}: {no_truth}; "
                   f"subjects without prediction in {pred_dir}: {no_prediction}")
        if not allow_missing:
            raise EvaluationError(message + " (pass --allow-missing to score the others)")
        warnings.warn(message + "; skipped", stacklevel=2)
    rows = []
    for subject in sorted(set(predictions) & set(truths), key=natural_key):
        pred, pred_affine, _ = load_label(predictions[subject])
        truth, truth_affine, spacing = load_label(truths[subject])
        if pred.shape != truth.shape:
            raise EvaluationError(f"{predictions[subject]} has shape {pred.shape} but {truths[subject]} "
                                  f"has {truth.shape}")
        if not np.allclose(pred_affine, truth_affine, atol=affine_tolerance):
            raise EvaluationError(f"{predictions[subject]} and {truths[subject]} have different affines:\n"
                                  f"{np.round(pred_affine, 4)}\nvs\n{np.round(truth_affine, 4)}")
        for name, scores in score_subject(pred, truth, spacing, structures, ignore).items():
            rows.append({"subject": subject, "structure": name, "dice": scores.dice, "hd95_mm": scores.hd95,
                         "assd_mm": scores.assd, "avd_percent": scores.avd})
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and (population) std per structure and metric over subjects, NaN left out; ``n``
    counts the values used."""
    out = []
    for structure in dict.fromkeys(r["structure"] for r in rows):
        for metric in COLUMNS.values():
            values = np.array([r[metric] for r in rows if r["structure"] == structure], dtype=float)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if values.size else float("nan")
            std = float(values.std()) if values.size else float("nan")
            out.append({"structure": structure, "metric": metric, "mean": mean, "std": std, "n": int(values.size)})
    return out


def markdown_table(summary: Sequence[dict]) -> str:
    """Rows structures, columns mean ± std per metric."""
    digits = {"dice": 3, "hd95_mm": 2, "assd_mm": 2, "avd_percent": 1}
    lines = ["| structure | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for structure in dict.fromkeys(s["structure"] for s in summary):
        cells = []
        for metric in COLUMNS.values():
            entry = next(s for s in summary if s["structure"] == structure and s["metric"] == metric)
            d = digits[metric]
            cells.append(f"{entry['mean']:.{d}f} ± {entry['std']:.{d}f}")
        lines.append(f"| {structure} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Temporary file in the same folder, then rename: never a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _csv(rows: Sequence[dict], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_outputs(rows: Sequence[dict], output: Path) -> str:
    """Write scores.csv, summary.csv and summary.md into ``output``; returns the Markdown table."""
    summary = summarise(rows)
    table = markdown_table(summary)
    write_atomically(output / "scores.csv", _csv(rows, ["subject", "structure", *COLUMNS.values()]))
    write_atomically(output / "summary.csv", _csv(summary, ["structure", "metric", "mean", "std", "n"]))
    write_atomically(output / "summary.md", table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of <subject>_seg.nii.gz predictions")
    parser.add_argument("--gt", required=True, type=Path, help="dataset folder or flat folder of label files")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--labels", help="for --dataset labels: '0:background,1:lesion'")
    parser.add_argument("--output", type=Path, help="where the results go (default: --pred)")
    parser.add_argument("--allow-missing", action="store_true", help="skip subjects on one side only")
    args = parser.parse_args(argv)
    try:
        rows = evaluate_folders(args.pred, args.gt, args.dataset, args.labels, allow_missing=args.allow_missing)
    except ValueError as error:  # EvaluationError, and the DataModules' DataError naming the bad file
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print("error: no subject to score", file=sys.stderr)
        return 2
    output = args.output or args.pred
    print(write_outputs(rows, output), end="")
    print(f"written to {output}/scores.csv, summary.csv, summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
