"""core.training_spacing: the training volumes' voxel spacing, and scans on other grids flagged."""

import numpy as np
import pytest

from core.training_spacing import SPACING_TOLERANCE, TrainingSpacing


def grid(*spacing: float) -> np.ndarray:
    """An affine with these voxel sizes, its axes permuted and flipped (a spacing is a column's length)."""
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = -spacing[0], spacing[1], spacing[2], 1.0
    return affine


def test_the_range_of_the_training_volumes_and_what_falls_outside_it() -> None:
    trained = TrainingSpacing.of_affines([grid(1.0, 1.0, 1.2), grid(1.2, 0.9, 1.2)])
    assert trained == TrainingSpacing(low=(1.0, 0.9, 1.2), high=(1.2, 1.0, 1.2))
    assert TrainingSpacing.from_dict(trained.to_dict()) == trained and TrainingSpacing.from_dict(None) is None
    assert SPACING_TOLERANCE == 1.25
    assert trained.problem(grid(1.1, 0.95, 1.2)) is None  # inside the range
    assert trained.problem(grid(0.8, 0.72, 1.5)) is None  # 1.0 / 0.8 = 0.9 / 0.72 = 1.5 / 1.2 = 1.25: the edge
    coarse = trained.problem(grid(1.1, 1.0, 3.6))  # 3.6 / 1.2 = 3
    assert coarse == ("voxels of 1.1 x 1 x 3.6 mm on the network's grid, where the model was trained on 1 x 0.9 x 1.2 "
                      "to 1.2 x 1 x 1.2 mm: it sees structures up to 3x smaller in voxels than it learned them, and "
                      "segments them worse (a model trained on scans of this spacing, or of several resampled to one "
                      "grid with data.init_args.target_spacing, sees it at the scale it learned)")
    fine = TrainingSpacing.of_affines([grid(2.0, 2.0, 2.0)]).problem(grid(1.0, 1.0, 1.0))
    assert fine is not None and fine.startswith("voxels of 1 x 1 x 1 mm on the network's grid, where the model was "
                                                "trained on 2 x 2 x 2 mm: it sees structures up to 2x larger")


@pytest.mark.parametrize("spacing", [(0.79, 1.0, 1.0), (1.0, 1.0, 1.26)])
def test_a_quarter_beyond_the_range_on_any_axis_is_flagged(spacing: tuple[float, float, float]) -> None:
    assert TrainingSpacing.of_affines([grid(1.0, 1.0, 1.0)]).problem(grid(*spacing)) is not None
