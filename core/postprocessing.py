"""Keeping only the largest connected component of a structure: nnU-Net's postprocessing, chosen
per structure by whether it raises the Dice on held-out subjects.

A network's segmentation of a brain can hold small islands of a tissue far from where it is (a
speck of white matter in the skull's shadow); a structure that is one piece in every brain loses
them by keeping its largest 26-connected component, the rest set to background. Whether that
helps is an empirical question per structure and dataset (a tumour may have several foci):
``evaluate.py --keep-largest-gains`` measures it on segmentations of validation subjects, and
``predict.py --keep-largest`` applies the structures that gained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from core.io import DataError
from core.labels import LabelSpace
from core.metrics import dice_from_counts

FOREGROUND = "foreground"  # every foreground class as one structure (nnU-Net's first candidate)
_26_CONNECTED = np.ones((3, 3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask (the mask itself when empty or whole)."""
    components, count = ndimage.label(mask, structure=_26_CONNECTED)
    if count <= 1:
        return np.asarray(mask, dtype=bool)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    return components == int(sizes.argmax())


def keep_largest(labels: np.ndarray, groups: Sequence[Sequence[int]], background: int = 0) -> np.ndarray:
    """``labels`` with, for each group of values, the voxels of the group outside the group's
    largest component set to ``background`` (a copy; groups applied in order)."""
    result = np.array(labels, copy=True)
    for values in groups:
        mask = np.isin(result, list(values))
        result[mask & ~largest_component(mask)] = background
    return result


def class_groups(space: LabelSpace, names: Sequence[str]) -> list[list[int]]:
    """The class indices of each named structure of a class model (:data:`FOREGROUND`: every
    foreground class as one); an unknown name, or a model of regions, is one line naming it."""
    if not names:
        return []
    if space.region_based:
        raise DataError(f"--keep-largest applies to class maps; this model predicts regions "
                        f"({', '.join(space.output_names)})")
    foreground = list(range(1, space.num_classes))
    known = {name: [index] for index, name in enumerate(space.class_names) if index > 0}
    unknown = [name for name in names if name != FOREGROUND and name not in known]
    if unknown:
        raise DataError(f"--keep-largest: unknown structures {unknown}; choose from {[FOREGROUND, *known]}")
    return [foreground if name == FOREGROUND else known[name] for name in names]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks, by the scorer's formula (1 when both are empty)."""
    return float(dice_from_counts(int((prediction & truth).sum()), int(prediction.sum()), int(truth.sum())))


class LargestComponentGains:
    """Each structure's mean Dice as predicted and with only its largest component kept
    (:data:`FOREGROUND`: every structure's values as one, judged by the mean over the structures,
    as nnU-Net judges its first candidate), over ``(prediction, truth)`` pairs added one at a
    time, so that a dataset's label maps are never all in memory at once. ``structures``: name ->
    its label values, in the maps' own values."""

    def __init__(self, structures: Mapping[str, Sequence[int]], background: int = 0) -> None:
        self.structures = {name: list(values) for name, values in structures.items()}
        self.candidates = {FOREGROUND: sorted({v for values in self.structures.values() for v in values}),
                           **self.structures}
        self.background = background
        self.sums = {name: [0.0, 0.0] for name in self.candidates}
        self.pairs = 0

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        truths = {name: np.isin(truth, values) for name, values in self.structures.items()}
        for name, values in self.candidates.items():
            kept = keep_largest(prediction, [values], self.background)
            for i, scored in enumerate((prediction, kept)):
                if name == FOREGROUND:
                    score = float(np.mean([dice(np.isin(scored, v), truths[n]) for n, v in self.structures.items()]))
                else:
                    score = dice(np.isin(scored, values), truths[name])
                self.sums[name][i] += score
        self.pairs += 1

    def means(self) -> dict[str, tuple[float, float]]:
        """Structure -> (mean Dice as predicted, with its largest component only)."""
        return {name: (before / self.pairs, after / self.pairs) for name, (before, after) in self.sums.items()}

