"""Where training patches come from: two sampling rules, and cropping with padding.

Corners live on the volume zero-padded at the end up to at least the patch size, so patches
larger than the volume work (their outside is background); ``crop_patch`` does that padding
per patch instead of copying whole volumes. With an ``overhang`` (volumes cropped to their
brain's box: half a patch, as nnU-Net lets patches hang over a cropped case), the volume is
also padded by it at both ends, so that patches see the empty space beyond the box as they
would beyond the brain of the whole scan; corners are then negative down to ``-overhang``. No
rule loops until it finds a patch it likes, so sampling always terminates.

- ``foreground`` (the thesis' rule): uniform over the patch positions that hold at least
  ``min_foreground_voxels`` labelled voxels, found exactly from a summed-area table.
- ``class_balanced`` (nnU-Net's): with probability ``fraction`` the patch is centred on a
  voxel of a class drawn uniformly among the foreground classes present, so rare classes
  (lesions, enhancing tumour) are seen as often as large ones; otherwise uniform anywhere.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

SAMPLING_RULES = ("foreground", "class_balanced")


def padded_shape(shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    """The last three axes of ``shape`` padded up to at least ``patch_size``."""
    return tuple(max(s, p) for s, p in zip(shape[-3:], patch_size, strict=True))


def pad_to_patch(array: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Zero-pad the last three axes (at the end) up to at least ``patch_size``."""
    pads = [(0, 0)] * (array.ndim - 3) + [(0, max(0, p - s)) for s, p in zip(array.shape[-3:], patch_size, strict=True)]
    return np.pad(array, pads) if any(after for _, after in pads) else array


def crop_patch(array: np.ndarray, corner: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The patch at ``corner`` of the last three axes (negative: starting before the volume),
    zero where it runs past either end.

    Reads only the patch (from a memory-mapped array, only its pages)."""
    window = tuple(slice(max(c, 0), max(c + p, 0)) for c, p in zip(corner, patch_size, strict=True))
    patch = np.asarray(array[(Ellipsis, *window)])
    before = [max(-c, 0) for c in corner]
    if any(before):
        patch = np.pad(patch, [(0, 0)] * (patch.ndim - 3) + [(b, 0) for b in before])
    if patch.shape[-3:] != tuple(patch_size):
        patch = pad_to_patch(patch, patch_size)
    return np.ascontiguousarray(patch)


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
                 name: str = "volume", overhang: Sequence[int] = (0, 0, 0)) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.overhang = tuple(int(o) for o in overhang)
        foreground = np.pad(np.asarray(label) > 0, [(o, o) for o in self.overhang])
        counts = foreground_counts(pad_to_patch(foreground, self.patch_size), self.patch_size)
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
        return tuple(int(i) - o for i, o in zip(np.unravel_index(flat, self.grid_shape), self.overhang, strict=True))


class ClassBalancedPatchSampler:
    """With probability ``fraction``: a patch centred on a voxel of a class drawn uniformly
    among the foreground classes present; otherwise a uniform patch anywhere.

    Up to ``max_locations`` voxel positions per class are kept (drawn once, reproducibly):
    enough to cover a class, small enough for hundreds of volumes in memory.
    """

    def __init__(self, label: np.ndarray, patch_size: Sequence[int], fraction: float = 0.33,
                 max_locations: int = 10_000, name: str = "volume", overhang: Sequence[int] = (0, 0, 0)) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"class_balanced_fraction must be within [0, 1], got {fraction}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.fraction = fraction
        self.overhang = tuple(int(o) for o in overhang)
        label = np.asarray(label)
        self.volume_shape = label.shape
        with_overhang = tuple(s + 2 * o for s, o in zip(label.shape, self.overhang, strict=True))
        self.grid_shape = tuple(s - p + 1 for s, p in zip(padded_shape(with_overhang, self.patch_size),
                                                           self.patch_size, strict=True))
        pick = np.random.default_rng(0)
        self.locations: dict[int, np.ndarray] = {}
        for c in np.unique(label):
            if c <= 0:  # background and ignored voxels are never targeted
                continue
            flat = np.flatnonzero(label == c)
            if len(flat) > max_locations:
                flat = np.sort(pick.choice(flat, max_locations, replace=False))
            self.locations[int(c)] = flat
        if fraction > 0 and not self.locations:
            warnings.warn(f"{name}: no foreground voxel; class-balanced sampling draws uniform patches only",
                          stacklevel=2)

    @property
    def classes(self) -> list[int]:
        """The foreground classes present (each drawn with equal probability)."""
        return sorted(self.locations)

    def sample(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Corner (z, y, x) of one patch."""
        if self.locations and rng.random() < self.fraction:
            flat = self.locations[self.classes[rng.integers(len(self.classes))]]
            centre = np.unravel_index(flat[rng.integers(len(flat))], self.volume_shape)
            return tuple(int(np.clip(c - p // 2, -o, g - 1 - o))
                         for c, p, g, o in zip(centre, self.patch_size, self.grid_shape, self.overhang, strict=True))
        return tuple(int(rng.integers(g)) - o for g, o in zip(self.grid_shape, self.overhang, strict=True))


def build_sampler(rule: str, label: np.ndarray, patch_size: Sequence[int], *, min_foreground_voxels: int = 1,
                  class_balanced_fraction: float = 0.33, name: str = "volume", overhang: Sequence[int] = (0, 0, 0)
                  ) -> ForegroundPatchSampler | ClassBalancedPatchSampler:
    """The sampler for a rule named in ``SAMPLING_RULES`` (``overhang``: see the module)."""
    if rule == "foreground":
        return ForegroundPatchSampler(label, patch_size, min_foreground_voxels, name=name, overhang=overhang)
    if rule == "class_balanced":
        return ClassBalancedPatchSampler(label, patch_size, class_balanced_fraction, name=name, overhang=overhang)
    raise ValueError(f"unknown sampling rule {rule!r}; choose one of {SAMPLING_RULES}")


def worker_rng() -> np.random.Generator:
    """A NumPy generator seeded from torch's RNG and the process's DDP rank, so
    ``seed_everything(workers=True)`` makes patch sampling reproducible while every DataLoader
    worker and every DDP process draws different patches (every rank starts from the same seed)."""
    seed, rank = int(torch.randint(0, 2**63 - 1, ()).item()), _rank()
    return np.random.default_rng(seed if rank == 0 else [seed, rank])  # one process: as it always was


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))
