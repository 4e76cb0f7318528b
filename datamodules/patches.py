"""Patch sampling for training: uniform over the patches that contain foreground.

The rule (the thesis' "uniform sampling of non-empty sub-volumes"): a patch position is
*valid* when the patch holds at least ``min_foreground_voxels`` foreground (label > 0)
voxels. The valid positions of a volume are found once, exactly, from a 3D summed-area table
of the foreground mask; a sample is then one uniform draw among them. There is no rejection
loop, so sampling always terminates. When no position meets the threshold (a tiny or empty
label map) the positions with the most foreground are used instead, and a warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch


def pad_to_patch(array: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Zero-pad the last three axes (at the end) up to at least ``patch_size``."""
    pads = [(0, 0)] * (array.ndim - 3) + [(0, max(0, p - s)) for s, p in zip(array.shape[-3:], patch_size, strict=True)]
    return np.pad(array, pads) if any(after for _, after in pads) else array


def foreground_counts(foreground: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Number of foreground voxels in the patch starting at every valid corner.

    Output shape: ``volume_shape - patch_size + 1`` per axis (the volume must be at least as
    large as the patch).
    """
    table = np.zeros(tuple(s + 1 for s in foreground.shape), dtype=np.int64)
    table[1:, 1:, 1:] = foreground.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    pd, ph, pw = patch_size
    d, h, w = (s - p + 1 for s, p in zip(foreground.shape, patch_size, strict=True))
    if min(d, h, w) < 1:
        raise ValueError(f"volume {foreground.shape} is smaller than the patch {tuple(patch_size)}")

    def corner(z: int, y: int, x: int) -> np.ndarray:
        return table[z : z + d, y : y + h, x : x + w]

    return (
        corner(pd, ph, pw)
        - corner(0, ph, pw)
        - corner(pd, 0, pw)
        - corner(pd, ph, 0)
        + corner(0, 0, pw)
        + corner(0, ph, 0)
        + corner(pd, 0, 0)
        - corner(0, 0, 0)
    )


class ForegroundPatchSampler:
    """Draws patch corners uniformly among the positions whose patch holds foreground."""

    def __init__(self, label: np.ndarray, patch_size: Sequence[int], min_foreground_voxels: int = 1,
                 name: str = "volume") -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        counts = foreground_counts(label > 0, self.patch_size)
        self.grid_shape = counts.shape
        valid = counts >= min_foreground_voxels
        if not valid.any():
            best = counts.max()
            warnings.warn(
                f"{name}: no {self.patch_size} patch holds {min_foreground_voxels} foreground voxels; "
                f"sampling among the patches with the most foreground ({best})",
                stacklevel=2,
            )
            valid = counts == best
        self.positions = np.flatnonzero(valid)

    def __len__(self) -> int:
        return len(self.positions)

    def sample(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Corner (z, y, x) of one patch, uniform over the valid positions."""
        flat = self.positions[rng.integers(len(self.positions))]
        return tuple(int(i) for i in np.unravel_index(flat, self.grid_shape))


def worker_rng() -> np.random.Generator:
    """A NumPy generator seeded from torch's RNG, so ``seed_everything(workers=True)`` makes
    patch sampling reproducible and every DataLoader worker draws different patches."""
    return np.random.default_rng(int(torch.randint(0, 2**63 - 1, ()).item()))
