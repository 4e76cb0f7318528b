"""Intensity normalisation and label mapping, shared by every DataModule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datamodules.io import DataError


def zscore_nonzero(image: np.ndarray, path: Path | str = "image") -> np.ndarray:
    """Z-score over the non-zero voxels (the thesis' normalisation); zero voxels stay zero.

    Skull-stripped MRI has an exact-zero background; normalising over the brain only keeps
    the background from dominating the statistics, and keeps it at 0 so padding with 0 is
    padding with background.
    """
    mask = image != 0
    if not mask.any():
        raise DataError(f"{path}: every voxel is zero; nothing to normalise")
    values = image[mask]
    std = float(values.std())
    if std == 0.0:
        raise DataError(f"{path}: every non-zero voxel has the same value {values[0]}; cannot z-score")
    out = np.zeros_like(image, dtype=np.float32)
    out[mask] = (values - values.mean()) / std
    return out


def map_labels(label: np.ndarray, value_to_class: Mapping[int, int], path: Path | str = "label") -> np.ndarray:
    """Map a dataset's label values to class indices 0..K-1 (as int64).

    Non-integer values and values outside ``value_to_class`` are errors that list them.
    """
    rounded = np.rint(label)
    if not np.array_equal(rounded, label):
        raise DataError(f"{path}: label map has non-integer values")
    values = np.unique(rounded).astype(np.int64)
    unknown = sorted(set(values.tolist()) - set(value_to_class))
    if unknown:
        raise DataError(
            f"{path}: label values {unknown} are not in the label map {sorted(value_to_class)}"
        )
    lookup = np.zeros(int(values.max()) + 1, dtype=np.int64)
    for value, index in value_to_class.items():
        if value <= values.max():
            lookup[value] = index
    return lookup[rounded.astype(np.int64)]
