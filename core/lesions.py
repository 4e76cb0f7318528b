"""Lesion-wise Dice and HD95, as the BraTS challenges rank segmentations from 2023 on.

A volume-wise Dice favours models that find the large lesions; BraTS 2023 on scores each lesion
of the ground truth and penalises every missed and every spurious one. Per structure (WT, TC,
ET, ...), following the challenge's published definition (BraTS-2023-Metrics):

1. The ground truth's lesions are its 26-connected components, those that lie within
   ``dilation`` voxels of each other counted as one lesion (the components of the mask grown by
   ``dilation`` steps of the 18-neighbourhood, each restricted to the ground truth's voxels).
2. The prediction's components (26-connected) that touch a lesion grown by ``dilation`` steps
   are that lesion's match: its Dice and HD95 are those of the lesion against their union
   (a lesion with no match: Dice 0, HD95 :data:`MISSED_HD95`).
3. A predicted component that matches no lesion is a false positive: Dice 0, HD95 374 mm.
4. Lesions of at most ``min_volume_mm3`` are left out of the scores (a prediction that touches
   one is no false positive either).
5. Lesion-wise Dice = the sum of the lesions' Dice / (lesions + false positives); HD95 likewise
   with 374 mm per false positive. No lesion and no false positive: Dice 1, HD95 0.

The rule's parameters are the challenges' own (:data:`LESION_RULES`). The HD95 of a lesion is
MONAI's, as every distance of this codebase (:func:`core.metrics.surface_distances`); the
challenge's code weights surface elements by their area (DeepMind's surface-distance), so
HD95 values may differ from the leaderboard's in the decimals; Dice and the counts are exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from core.metrics import ROW_COLUMNS, dice_from_counts, score_structure, structure_masks, surface_distances

MISSED_HD95 = 374.0  # mm: BraTS' distance for a missed or spurious lesion
_COMPONENTS = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
_GROWTH = ndimage.generate_binary_structure(3, 2)  # one step of growth: the 18-neighbourhood


@dataclass(frozen=True)
class LesionRule:
    """How far lesions are grown to merge and match (voxels), and the smallest one scored (mm³)."""

    dilation: int
    min_volume_mm3: float


# The BraTS challenges' parameters (BraTS-2023-Metrics, get_challenge_parameters).
LESION_RULES: dict[str, LesionRule] = {
    "BraTS-GLI": LesionRule(3, 50.0),
    "BraTS-SSA": LesionRule(3, 50.0),
    "BraTS-MEN": LesionRule(1, 50.0),
    "BraTS-PED": LesionRule(3, 50.0),
    "BraTS-MET": LesionRule(1, 2.0),
}


def lesion_rule(spec: str) -> LesionRule:
    """A rule by a challenge's name (:data:`LESION_RULES`), or as ``DILATION:MIN_VOLUME`` (voxels,
    mm³: ``1:10``) for lesion data of other kinds; anything else is a ValueError saying so."""
    if spec in LESION_RULES:
        return LESION_RULES[spec]
    dilation, sep, volume = str(spec).partition(":")
    try:
        rule = LesionRule(int(dilation), float(volume)) if sep else None
    except ValueError:
        rule = None
    if rule is None or rule.dilation < 0 or rule.min_volume_mm3 < 0:
        raise ValueError(f"lesion rule {spec!r}: a challenge ({', '.join(LESION_RULES)}) or DILATION:MIN_VOLUME "
                         "(voxels, mm³; e.g. 1:10)")
    return rule


LESION_METRICS = ("lesion_dice", "lesion_hd95_mm")  # averaged over subjects
LESION_COUNTS = ("lesions", "detected", "missed", "false_positives")  # summed over subjects
LESION_COLUMNS = (*LESION_METRICS, *LESION_COUNTS)  # what a row of scores gains


@dataclass(frozen=True)
class LesionScores:
    """One structure's lesion-wise scores and the counts behind them (lesions above the size rule)."""

    dice: float
    hd95: float
    lesions: int  # ground-truth lesions scored
    detected: int  # of those, with a matching predicted component
    false_positives: int  # predicted components that match no lesion

    @property
    def missed(self) -> int:
        return self.lesions - self.detected


def _box(slices: tuple[slice, ...], margin: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(slices, shape, strict=True))


def _union(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def lesion_scores(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float], rule: LesionRule
                  ) -> LesionScores:
    """Lesion-wise scores of one structure's binary masks (see the module's docstring)."""
    prediction, truth = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape or truth.ndim != 3:
        raise ValueError(f"expected two 3D masks of one shape, got {prediction.shape} and {truth.shape}")
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    components, n_components = ndimage.label(prediction, _COMPONENTS)
    component_boxes = ndimage.find_objects(components)
    grown = ndimage.binary_dilation(truth, _GROWTH, iterations=rule.dilation) if rule.dilation else truth
    lesions = np.where(truth, ndimage.label(grown, _COMPONENTS)[0], 0)  # close components as one lesion
    matched_any: set[int] = set()
    dice_sum = hd_sum = 0.0
    scored = detected = 0
    for lesion, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        around = _box(box, rule.dilation + 1, truth.shape)
        reach = lesions[around] == lesion
        if rule.dilation:
            reach = ndimage.binary_dilation(reach, _GROWTH, iterations=rule.dilation)
        matched = sorted(set(np.unique(components[around][reach]).tolist()) - {0})
        matched_any.update(matched)
        volume = int((lesions[box] == lesion).sum()) * voxel_mm3
        if volume <= rule.min_volume_mm3:
            continue
        scored += 1
        if not matched:
            hd_sum += MISSED_HD95
            continue
        detected += 1
        region = box
        for component in matched:
            region = _union(region, component_boxes[component - 1])
        region = _box(region, 1, truth.shape)  # a border of background, so surfaces stay surfaces
        ours, theirs = np.isin(components[region], matched), lesions[region] == lesion
        dice_sum += float(dice_from_counts(int((ours & theirs).sum()), int(ours.sum()), int(theirs.sum())))
        hd_sum += surface_distances(ours, theirs, spacing)[0]
    false_positives = n_components - len(matched_any)
    total = scored + false_positives
    if total == 0:
        return LesionScores(1.0, 0.0, 0, 0, 0)
    return LesionScores(dice_sum / total, (hd_sum + MISSED_HD95 * false_positives) / total, scored, detected,
                        false_positives)


def score_columns(lesion_wise: bool) -> list[str]:
    """The columns of a table of :func:`subject_rows`."""
    return [*ROW_COLUMNS, *(LESION_COLUMNS if lesion_wise else ())]


def subject_rows(subject: str, prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                 structures: Mapping[str, Sequence[int]], ignore: Sequence[int] = (), rule: LesionRule | None = None,
                 diagonal: float | None = None) -> list[dict[str, Any]]:
    """One subject's rows of scores, a row per structure (:func:`score_columns`): the metric set
    of :mod:`core.metrics` and, with ``rule``, the lesion-wise columns, from one pair of masks per
    structure (:func:`core.metrics.structure_masks`: the dataset's own values, ``ignore``d truth
    in neither mask). What ``evaluate.py`` and ``train.py test`` write alike (``diagonal``: see
    :func:`core.metrics.score_structure`)."""
    rows = []
    for name, ours, theirs in structure_masks(prediction, truth, structures, ignore):
        row = {"subject": subject, "structure": name,
               **score_structure(ours, theirs, spacing, diagonal=diagonal).as_row()}
        if rule is not None:
            lesions = lesion_scores(ours, theirs, spacing, rule)
            row.update(lesion_dice=lesions.dice, lesion_hd95_mm=lesions.hd95, lesions=lesions.lesions,
                       detected=lesions.detected, missed=lesions.missed, false_positives=lesions.false_positives)
        rows.append(row)
    return rows


def lesion_table(rows: Sequence[Mapping[str, Any]], spec: str) -> str:
    """Markdown: per structure, the lesion-wise Dice and HD95 (mean ± std over subjects) and the
    lesions, detections, misses and false positives summed over subjects; ``spec``: the rule
    (:func:`lesion_rule`)."""
    rule = lesion_rule(spec)
    lines = [f"Lesion-wise, {spec} (lesions within {rule.dilation} voxels as one, above "
             f"{rule.min_volume_mm3:g} mm³):", "",
             "| structure | lesion DSC | lesion HD95 mm | lesions | detected | missed | false positives |",
             "|---|---|---|---|---|---|---|"]
    for structure in dict.fromkeys(r["structure"] for r in rows):
        mine = [r for r in rows if r["structure"] == structure]
        dice, hd95 = (np.array([r[c] for r in mine], dtype=float) for c in LESION_METRICS)
        counts = " | ".join(str(int(sum(r[c] for r in mine))) for c in LESION_COUNTS)
        lines.append(f"| {structure} | {dice.mean():.3f} ± {dice.std():.3f} | {hd95.mean():.2f} ± {hd95.std():.2f} "
                     f"| {counts} |")
    return "\n".join(lines) + "\n"
