"""The voxel spacing a model was trained at: stored at training, checked at prediction.

A network learns structures at their size in voxels. Trained without ``target_spacing`` (every
scan left at its own spacing), it is given the scan's voxels as they are: a model of 2 mm scans
given a 1 mm scan sees a brain twice its size, and segments it worse without a word (the demo
model, test mean Dice 0.925 at 2 mm: 0.844 on its subject 9 synthesized at 1 mm, 0.863 at 3 mm).
Resampling such a scan to the model's spacing at prediction did not help there (0.761 and
0.566: the interpolation blurs what the model learned sharp), so the warning says what differs
and leaves the remedy to the researcher: a model trained on scans of this spacing, or on scans
of several spacings resampled to one grid (``target_spacing``), which then sees every scan so.
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
                f"it sees structures up to {size} in voxels than it learned them, and segments them worse (a model "
                "trained on scans of this spacing, or of several resampled to one grid with "
                "data.init_args.target_spacing, sees it at the scale it learned)")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (checkpoints hold tensors and plain types only)."""
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainingSpacing | None:
        """None for checkpoints written before the spacing was stored."""
        if not data:
            return None
        return cls(tuple(float(s) for s in data["low"]), tuple(float(s) for s in data["high"]))
