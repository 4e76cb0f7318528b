"""Score a folder of predicted segmentations against the ground truth, challenge-style.

    python evaluate.py --pred runs/x/predictions --gt /data/MICCAI_BraTS2020_TrainingData --dataset brats

Predictions are ``<subject>_seg.nii.gz`` (what the prediction writer produces). ``--gt`` is
either the dataset folder as the challenge ships it (subjects found by the dataset's
DataModule) or a flat folder of ``<subject>[_seg|_label|...].nii.gz`` files. Writes
``scores.csv`` (one row per subject and structure), ``summary.csv`` (mean, std and count per
structure and metric; NaN values left out) and ``summary.md`` (also printed). Metric
definitions and the empty-mask conventions: :mod:`core.metrics`; the
structures each ``--dataset`` scores: :mod:`core.dataset_labels`.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from core.dataset_labels import DATASET_LABELS
from core.io import DataError, check_size, one_line_warnings, write_text_atomically
from core.labels import LabelSpace
from core.metrics import ROW_COLUMNS, csv_text, markdown_table, score_rows, score_subject, summarise

PRED_SUFFIX = "_seg.nii.gz"
NIFTI = re.compile(r"^(?P<stem>.+?)(?:[_-](?:seg|segm|label|labels|segmentation|gt|mask))?\.nii(?:\.gz)?$",
                   re.IGNORECASE)
# The challenge layouts evaluate.py can read ground truth from (by their DataModule).
LAYOUTS = {"iseg": "ISeg2017DataModule", "mrbrains18": "MRBrainS18DataModule",
           "mrbrains18_thesis": "MRBrainS18DataModule", "brats": "BraTSDataModule"}


class EvaluationError(ValueError):
    """Inputs that cannot be scored (missing subjects, grids that disagree)."""


def natural_key(text: str) -> list[int | str]:
    """Sort "2" before "10" (subject ids are numbers in most challenges)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def parse_labels(labels: str | Mapping[int, str]) -> LabelSpace:
    """``"0:background,1:lesion"`` (or a dict) -> a label space whose structures are the
    non-background values (background 0 is added when not named)."""
    if isinstance(labels, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in labels.split(","))):
            value, sep, name = item.partition(":")
            if not sep or not name.strip():
                raise EvaluationError(f"--labels: expected value:name, got {item!r}")
            pairs[int(value)] = name.strip()
        labels = pairs
    foreground = {int(v): str(n) for v, n in labels.items() if int(v) != 0 and str(n).lower() != "background"}
    if not foreground:
        raise EvaluationError("--labels names no non-background value")
    background = [int(v) for v in labels if int(v) not in foreground] or [0]
    return LabelSpace.from_groups({"background": background, **{n: [v] for v, n in foreground.items()}})


def label_space_for(dataset: str, labels: str | Mapping[int, str] | None = None) -> LabelSpace:
    """The scored structures and ignored values: a challenge's (``DATASET_LABELS``) or ``--labels``."""
    if dataset == "labels":
        if labels is None:
            raise EvaluationError("--dataset labels needs --labels, e.g. '0:background,1:lesion'")
        return parse_labels(labels)
    if dataset not in DATASET_LABELS:
        raise EvaluationError(f"unknown dataset {dataset!r}; choose from {sorted([*DATASET_LABELS, 'labels'])}")
    return DATASET_LABELS[dataset]


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
    if dataset not in LAYOUTS:
        raise EvaluationError(f"{gt_dir}: no NIfTI files at the top level (dataset {dataset!r} has no known layout)")
    import datamodules  # Lightning and the loaders: only needed to read the challenge layouts

    subjects = getattr(datamodules, LAYOUTS[dataset])(str(gt_dir), cache_dir=None).subjects()
    return {sid: s.label for sid, s in subjects.items() if s.label is not None}


def load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(integer label map (D, H, W), affine, spacing in mm) of one file; an unreadable,
    truncated or implausible file is an error naming it (never a traceback from zlib)."""
    try:
        image = nib.load(str(path))
        check_size(Path(path), image)
        data = np.asarray(image.dataobj)
    except DataError as error:
        raise EvaluationError(str(error)) from error
    except Exception as error:  # nibabel and zlib raise many types for corrupt or truncated files
        raise EvaluationError(f"{path}: cannot read the label map ({type(error).__name__}: {error})") from error
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
    space = label_space_for(dataset, labels)
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
        for path, labels in ((predictions[subject], pred), (truths[subject], truth)):
            unknown = sorted(set(np.unique(labels).tolist()) - set(space.value_to_class))
            if unknown:
                raise EvaluationError(f"{path}: label values {unknown} are not in the {dataset} label map "
                                      f"{sorted(space.value_to_class)}")
        rows += score_rows(subject, score_subject(pred, truth, spacing, space.structure_values, space.ignored_values))
    return rows


def write_outputs(rows: Sequence[dict], output: Path) -> str:
    """Write scores.csv, summary.csv and summary.md into ``output``; returns the Markdown table."""
    summary = summarise(rows)
    table = markdown_table(summary)
    write_text_atomically(output / "scores.csv", csv_text(rows, ROW_COLUMNS))
    write_text_atomically(output / "summary.csv", csv_text(summary, ["structure", "metric", "mean", "std", "n"]))
    write_text_atomically(output / "summary.md", table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of <subject>_seg.nii.gz predictions")
    parser.add_argument("--gt", required=True, type=Path, help="dataset folder or flat folder of label files")
    parser.add_argument("--dataset", required=True, choices=sorted([*DATASET_LABELS, "labels"]))
    parser.add_argument("--labels", help="for --dataset labels: '0:background,1:lesion'")
    parser.add_argument("--output", type=Path, help="where the results go (default: --pred)")
    parser.add_argument("--allow-missing", action="store_true", help="skip subjects on one side only")
    args = parser.parse_args(argv)
    one_line_warnings("evaluate.py")
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
