"""The voxel spacing a model was trained at: stored at training, checked at prediction.

A network learns structures at their size in voxels. Trained without ``target_spacing`` (every
scan left at its own spacing), it is given the scan's voxels as they are: a model of 2 mm scans
given the same subject at 1 mm sees a brain twice its size, and segments it without a word
(the demo model: test Dice CSF/GM/WM 0.860/0.953/0.947 at 2 mm, 0.352/0.769/0.800 on the
subject resampled to 1 mm, 0.651/0.899/0.892 when that is resampled back to 2 mm first). With
``target_spacing`` every scan is resampled to the model's grid, so the spacings always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.geometry import voxel_spacing

# Flag a scan whose voxels differ from every training scan's by more than this factor on an axis
# of the network's grid.
SPACING_TOLERANCE = 1.25


def _mm(spacing: Iterable[float]) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)


@dataclass(frozen=True)
class TrainingSpacing:
    """The smallest and largest voxel spacing (mm) of the training volumes on each axis of the
    network's grid (after reorientation and any ``target_spacing``)."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    @classmethod
    def of_affines(cls, affines: Iterable[np.ndarray]) -> TrainingSpacing:
        """From the network-grid affines of the training volumes."""
        spacings = np.stack([voxel_spacing(a) for a in affines])
        return cls(tuple(float(s) for s in spacings.min(axis=0)), tuple(float(s) for s in spacings.max(axis=0)))

    @property
    def typical(self) -> tuple[float, float, float]:
        """The spacing to resample a scan to for this model: per axis the geometric mean of the
        range's ends (the training spacing itself when the volumes shared one)."""
        return tuple(round(float(np.sqrt(lo * hi)), 6) for lo, hi in zip(self.low, self.high, strict=True))

    def problem(self, affine: np.ndarray) -> str | None:
        """Why a volume on the grid ``affine`` is not what the model was trained on, or None."""
        spacing = voxel_spacing(affine)
        low, high = np.asarray(self.low), np.asarray(self.high)
        tolerance = SPACING_TOLERANCE * (1 + 1e-6)  # a factor of exactly 1.25 stays inside
        if np.all(spacing * tolerance >= low) and np.all(spacing <= high * tolerance):
            return None
        trained = _mm(self.low) if np.allclose(low, high, rtol=1e-3) else f"{_mm(self.low)} to {_mm(self.high)}"
        larger, smaller = float(np.max(low / spacing)), float(np.max(spacing / high))
        size = f"{larger:.2g}x larger" if larger >= smaller else f"{smaller:.2g}x smaller"
        return (f"voxels of {_mm(spacing)} mm on the network's grid, where the model was trained on {trained} mm: "
                f"it sees structures up to {size} in voxels than it learned them, and segments them worse (resample "
                f"it to {_mm(self.typical)} mm: predict.py --resample-to-training-spacing, or data.init_args."
                "target_spacing in train.py; or train with target_spacing)")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (checkpoints hold tensors and plain types only)."""
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainingSpacing | None:
        """None for checkpoints written before the spacing was stored."""
        if not data:
            return None
        return cls(tuple(float(s) for s in data["low"]), tuple(float(s) for s in data["high"]))
