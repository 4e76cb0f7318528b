"""Per-structure segmentation metrics as the brain MRI challenges report them.

Metrics per structure (a binary mask): Dice (DSC), the 95th-percentile Hausdorff distance
(HD95, mm), the average symmetric surface distance (ASSD, mm), the absolute volume
difference (AVD, % of the ground-truth volume) and the sensitivity (true-positive rate, the
share of the ground truth found). Distances come from MONAI with the voxel spacing, so that our
numbers are the ones others get from the same library: surfaces are the mask voxels removed by
one binary erosion, HD95 is the larger of the two directed 95th percentiles
(``compute_hausdorff_distance(percentile=95)``), ASSD the mean of all surface distances in both
directions (``compute_average_surface_distance(symmetric=True)``); both from one computation of
the surface distances (``get_edge_surface_distance``, which each of those functions runs anew).

Empty masks (MONAI returns NaN/inf there, which would poison a mean):

============================  =====  ===============  ===============  =====  ===========
case                          DSC    HD95             ASSD             AVD    sensitivity
============================  =====  ===============  ===============  =====  ===========
both empty                    1      0                0                0      1
truth empty, prediction not   0      volume diagonal  volume diagonal  NaN    NaN
prediction empty, truth not   0      volume diagonal  volume diagonal  100    0
============================  =====  ===============  ===============  =====  ===========

Both empty is a perfect answer (the BraTS convention, e.g. ET absent and not predicted). A
missing or spurious structure gets the largest distance the volume allows, its diagonal in
mm (``sqrt(sum((shape * spacing) ** 2))``; BraTS' 373.13 mm is this for 240x240x155 at 1 mm),
so a miss is penalised rather than silently dropped. AVD and sensitivity relative to an empty
truth are undefined: NaN, left out of means (``summary`` reports how many values each mean used).

``valid`` / ``ignore``: voxels marked as not counting (MRBrainS18 labels 9 and 10) are removed
from both masks before scoring, so whatever is predicted there changes nothing.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from core.labels import value_mask


def _metric(column: str, title: str, digits: int) -> Any:
    """A score field and how it is shown: CSV column, table title, decimals in tables."""
    return field(metadata={"column": column, "title": title, "digits": digits})


@dataclass(frozen=True)
class StructureScores:
    """Scores of one structure: HD95/ASSD in mm, AVD in % of the ground-truth volume.

    The metric set of the codebase: every CSV, Markdown and printed table and every logged
    table takes its columns from these fields, so a metric added here (a field and its value
    in :func:`score_structure`) appears everywhere.
    """

    dice: float = _metric("dice", "DSC", 3)
    hd95: float = _metric("hd95_mm", "HD95 mm", 2)
    assd: float = _metric("assd_mm", "ASSD mm", 2)
    avd: float = _metric("avd_percent", "AVD %", 1)
    sensitivity: float = _metric("sensitivity", "Sens.", 3)

    def as_row(self) -> dict[str, float]:
        """Column name -> value."""
        return {f.metadata["column"]: getattr(self, f.name) for f in fields(self)}


COLUMNS = {f.name: f.metadata["column"] for f in fields(StructureScores)}  # metric -> CSV column
TITLES = {f.metadata["column"]: f.metadata["title"] for f in fields(StructureScores)}
DIGITS = {f.metadata["column"]: f.metadata["digits"] for f in fields(StructureScores)}
ROW_COLUMNS = ("subject", "structure", *COLUMNS.values())  # one row per subject and structure
SCORE_FILES = ("scores.csv", "summary.csv", "summary.md")  # what evaluate.py writes: rows, summary, its table
SCORING_RECORD = "scoring.json"  # beside them: which predictions against which ground truth, scored how
INPUT_PROBLEMS_CSV = "input_problems.csv"  # a test report's subjects whose scans the input check flagged


def dice_from_counts(overlap: Any, n_prediction: Any, n_truth: Any) -> Any:
    """Dice from voxel counts, 1 where both masks are empty (the table above); numbers or
    tensors alike, so the Dice logged in training and the one in every table are one formula."""
    total = n_prediction + n_truth
    empty = total == 0
    return (2 * overlap + empty) / (total + empty)


def dice_per_structure(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Hard Dice (B, S) of binary masks (B, S, ...) per batch item and structure, on the masks'
    device: what validation and test log, with the empty-mask conventions of this module."""
    dims = tuple(range(2, prediction.ndim))
    prediction, truth = prediction.bool(), truth.bool()
    counts = [m.sum(dims, dtype=torch.float64) for m in (prediction & truth, prediction, truth)]
    return dice_from_counts(*counts)


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance inside the volume (mm): the value of a missing or spurious structure."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def surface_distances(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(HD95, ASSD) in mm of two non-empty binary masks, by MONAI: the surface distances in both
    directions computed once (half the time of MONAI's two functions, each computing them), then
    reduced as they reduce them."""
    pred, gt = (torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)) for m in (prediction, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's deprecation notice, one per call
        _, (to_truth, to_prediction), _ = get_edge_surface_distance(pred, gt, spacing=[float(s) for s in spacing],
                                                                    symmetric=True)
    hd95 = torch.max(torch.quantile(to_truth, 0.95), torch.quantile(to_prediction, 0.95))
    return float(hd95), float(torch.cat([to_truth, to_prediction]).mean())


def score_structure(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                    valid: np.ndarray | None = None, diagonal: float | None = None) -> StructureScores:
    """Scores of one structure from binary masks (D, H, W); voxels where ``valid`` is False
    are removed from both masks first. Empty masks follow the module's conventions; the distance
    a missing or spurious structure scores is ``diagonal`` (mm), by default the masks' volume's
    (a test on volumes cropped to the brain passes the scan's, as ``evaluate.py`` scores it)."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape or prediction.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"expected two 3D masks of one shape and 3 spacings, got {prediction.shape}, "
                         f"{truth.shape} and {tuple(spacing)}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        prediction, truth = prediction & valid, truth & valid
    n_pred, n_truth = int(prediction.sum()), int(truth.sum())
    if n_pred == 0 and n_truth == 0:
        return StructureScores(dice=1.0, hd95=0.0, assd=0.0, avd=0.0, sensitivity=1.0)
    avd = math.nan if n_truth == 0 else 100.0 * abs(n_pred - n_truth) / n_truth  # spacing cancels
    overlap = int((prediction & truth).sum())
    dice = dice_from_counts(overlap, n_pred, n_truth)
    sensitivity = math.nan if n_truth == 0 else overlap / n_truth
    if n_pred == 0 or n_truth == 0:
        diagonal = volume_diagonal(truth.shape, spacing) if diagonal is None else float(diagonal)
        return StructureScores(dice=dice, hd95=diagonal, assd=diagonal, avd=avd, sensitivity=sensitivity)
    hd95, assd = surface_distances(prediction, truth, spacing)
    return StructureScores(dice=dice, hd95=hd95, assd=assd, avd=avd, sensitivity=sensitivity)


def structure_masks(prediction: np.ndarray, truth: np.ndarray, structures: Mapping[str, Sequence[int]],
                    ignore: Sequence[int] = ()) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, predicted mask, true mask)`` of each structure of one subject's label maps (the
    dataset's own values); ``structures``: name -> the label values forming it (a class ``[10]``,
    a BraTS region ``WT: [1, 2, 4]``). Voxels whose truth is in ``ignore`` are in neither mask."""
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    valid = ~value_mask(truth, ignore) if len(ignore) else None
    for name, values in structures.items():
        ours, theirs = value_mask(prediction, values), value_mask(truth, values)
        yield (name, ours, theirs) if valid is None else (name, ours & valid, theirs & valid)


def score_subject(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                  structures: Mapping[str, Sequence[int]], ignore: Sequence[int] = ()) -> dict[str, StructureScores]:
    """Scores per structure of one subject's label maps (see :func:`structure_masks`): voxels
    whose truth is in ``ignore`` count for nothing, whatever predicted."""
    return {name: score_structure(ours, theirs, spacing)
            for name, ours, theirs in structure_masks(prediction, truth, structures, ignore)}


# --- Tables of scores (one row per subject and structure) -----------------------------------


def summarise(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Mean and (population) std per structure and metric (``columns``: default the metric set)
    over subjects, NaN left out; ``n`` counts the values used."""
    out = []
    for structure in dict.fromkeys(r["structure"] for r in rows):
        for column in columns or COLUMNS.values():
            values = np.array([r[column] for r in rows if r["structure"] == structure], dtype=float)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if values.size else float("nan")
            std = float(values.std()) if values.size else float("nan")
            out.append({"structure": structure, "metric": column, "mean": mean, "std": std, "n": int(values.size)})
    return out


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """Rows structures, columns mean ± std per metric."""
    lines = ["| structure | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for structure in dict.fromkeys(s["structure"] for s in summary):
        cells = []
        for column in COLUMNS.values():
            entry = next(s for s in summary if s["structure"] == structure and s["metric"] == column)
            d = DIGITS[column]
            cells.append(f"{entry['mean']:.{d}f} ± {entry['std']:.{d}f}")
        lines.append(f"| {structure} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """Fixed-width means per structure (rows) and metric (columns), for the console."""
    lines = [f"{'structure':<16}" + "".join(f"{TITLES[c]:>12}" for c in COLUMNS.values())]
    for structure in dict.fromkeys(s["structure"] for s in summary):
        means = {s["metric"]: s["mean"] for s in summary if s["structure"] == structure}
        lines.append(f"{structure:<16}" + "".join(f"{means[c]:12.4f}" for c in COLUMNS.values()))
    return "\n".join(lines)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV with floats at 6 decimals."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
