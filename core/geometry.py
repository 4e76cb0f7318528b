"""Voxel grids: reorientation to RAS+, resampling to a spacing or onto another grid, and the way back.

Conventions
-----------
* Arrays are numpy; the spatial axes are the LAST three, so a volume ``(D, H, W)`` and a
  channels-first stack ``(C, D, H, W)`` are handled alike (every channel the same way).
* Affines are 4x4 float64 voxel -> world (NIfTI convention, mm); integer voxel indices are
  voxel centres.
* A grid covers the box of its voxels, ``[-0.5, n - 0.5)`` in index space (half-open, as
  voxel ``i`` owns ``[i - 0.5, i + 0.5)``). A target voxel centre inside that box takes a value
  from the source (between the outermost voxel centres and the box border the edge value is
  held); one outside it, the border ``n - 0.5`` included, gets 0.
* Order 0 (nearest, for label maps) keeps the input dtype and its values exactly; order >= 1
  (1 linear, 3 cubic, for images) returns float32, computed with float64 coordinates.
* Grids related by an exact axis permutation / flip / integer voxel shift are mapped by pure
  indexing for every order, so undoing :func:`reorient_to_canonical` (e.g. to write a
  prediction in the scan's own space) is bit-exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from core.io import DataError

# Largest deviation (in source voxels) from a signed permutation / integer shift for which
# two grids still count as "the same voxels, re-indexed" and are mapped by pure indexing.
EXACT_TOLERANCE_VOXELS = 1e-4


def _check_affine(affine: np.ndarray, path: str | Path) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"{path}: affine must be 4x4, got shape {affine.shape}")
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: affine has NaN or infinite entries")
    if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise DataError(f"{path}: affine's last row must be [0, 0, 0, 1], got {affine[3]}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: affine is singular (a voxel axis has zero length or axes are parallel)")
    return affine


def _spatial_shape(data: np.ndarray, path: str | Path) -> tuple[int, int, int]:
    if data.ndim < 3:
        raise DataError(f"{path}: expected at least 3 (spatial) axes, got shape {data.shape}")
    depth, height, width = data.shape[-3:]
    return int(depth), int(height), int(width)


def _check_order(order: int) -> int:
    if order not in range(6):
        raise ValueError(f"interpolation order must be 0..5 (0 nearest, 1 linear, 3 cubic), got {order}")
    return int(order)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis (length of the affine's columns), float64."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def _corner_centres(shape: Sequence[int]) -> np.ndarray:
    """Homogeneous index coordinates (4, 8) of the 8 corner voxel centres of a grid."""
    corners = np.array(list(product(*[(0, int(n) - 1) for n in shape[-3:]])), dtype=np.float64)
    return np.vstack([corners.T, np.ones(8)])


def same_grid(
    affine_a: np.ndarray,
    affine_b: np.ndarray,
    shape_a: Sequence[int],
    shape_b: Sequence[int],
    tolerance: float = 1e-3,
) -> bool:
    """Whether two grids are the same voxels: equal spatial shapes (the last three entries, so a
    ``(C, D, H, W)`` stack and a ``(D, H, W)`` label can be compared) and every voxel centre at
    the same world position within ``tolerance`` mm (checked at the 8 corners, which bound it)."""
    if tuple(shape_a[-3:]) != tuple(shape_b[-3:]):
        return False
    return grid_offset(affine_a, affine_b, shape_a) <= tolerance


def grid_offset(affine_a: np.ndarray, affine_b: np.ndarray, shape: Sequence[int]) -> float:
    """How far apart (mm, largest coordinate) two affines put the same voxel of a grid of
    ``shape``: checked at the 8 corners, which bound it."""
    corners = _corner_centres(shape)
    difference = (np.asarray(affine_a, dtype=np.float64) - np.asarray(affine_b, dtype=np.float64)) @ corners
    return float(np.abs(difference[:3]).max())


def reorient_to_canonical(
    data: np.ndarray, affine: np.ndarray, path: str | Path = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the spatial axes (no interpolation) so they run closest to RAS+.

    Returns ``(data, new_affine)`` describing the same world positions, like
    ``nibabel.as_closest_canonical``, so scans stored in any orientation (LPS, ASR, ...) look
    alike to a network. The result is C-contiguous (``torch.from_numpy`` rejects negative
    strides); when the input is already canonical and contiguous it is returned as is.
    """
    affine = _check_affine(affine, path)
    data = np.asarray(data)
    shape = _spatial_shape(data, path)
    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise DataError(f"{path}: cannot tell the orientation of the voxel axes from the affine")
    new_affine = affine @ inv_ornt_aff(ornt, shape)
    # apply_orientation works on the leading axes; the spatial ones are the last three here.
    spatial_first = np.moveaxis(data, (-3, -2, -1), (0, 1, 2))
    reoriented = np.moveaxis(apply_orientation(spatial_first, ornt), (0, 1, 2), (-3, -2, -1))
    return np.ascontiguousarray(reoriented), new_affine


def reorient_like(data: np.ndarray, affine: np.ndarray, reference_affine: np.ndarray,
                  path: str | Path = "image") -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the spatial axes (no interpolation) into the voxel order of
    ``reference_affine``: a label stored RAS beside a scan stored LAS (fMRIPrep conforms its
    outputs to RAS) comes back on the scan's own voxels when it is the same grid. Returns
    ``(data, new_affine)`` describing the same world positions."""
    affine = _check_affine(affine, path)
    data = np.asarray(data)
    shape = _spatial_shape(data, path)
    source, target = io_orientation(affine), io_orientation(_check_affine(reference_affine, path))
    if np.isnan(source).any() or np.isnan(target).any():
        raise DataError(f"{path}: cannot tell the orientation of the voxel axes from the affine")
    transform = ornt_transform(source, target)
    spatial_first = np.moveaxis(data, (-3, -2, -1), (0, 1, 2))
    reoriented = np.moveaxis(apply_orientation(spatial_first, transform), (0, 1, 2), (-3, -2, -1))
    return np.ascontiguousarray(reoriented), affine @ inv_ornt_aff(transform, shape)


def resample_to_spacing(
    data: np.ndarray, affine: np.ndarray, spacing: Sequence[float], order: int, path: str | Path = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Resample onto a grid with voxel size ``spacing`` (mm, per voxel axis) over the same box.

    Field-of-view convention: the new grid keeps the axis directions and the OUTER CORNER of
    the first voxel (index ``(-0.5, -0.5, -0.5)``) in place, and has ``round(n * old / new)``
    voxels per axis, so it covers the same box (up to half a new voxel at the far end when the
    ratio is not whole) and e.g. 3 mm -> 1 mm splits every old voxel into 3 new ones. The first
    new voxel centre therefore moves by ``(new - old) / 2`` along each axis.
    Returns ``(data, new_affine)``; order 0 for labels, 1 or 3 for images.
    """
    affine = _check_affine(affine, path)
    shape = np.array(_spatial_shape(np.asarray(data), path))
    new_spacing = np.asarray(spacing, dtype=np.float64)
    if new_spacing.shape != (3,) or not np.isfinite(new_spacing).all() or (new_spacing <= 0).any():
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    old_spacing = voxel_spacing(affine)
    new_shape = np.maximum(1, np.floor(shape * old_spacing / new_spacing + 0.5)).astype(int)
    new_affine = np.eye(4)
    new_affine[:3, :3] = affine[:3, :3] / old_spacing * new_spacing
    first_corner = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    new_affine[:3, 3] = first_corner[:3] + new_affine[:3, :3] @ np.full(3, 0.5)
    resampled = resample_onto(data, affine, tuple(new_shape), new_affine, order, path)
    return resampled, new_affine


def _as_axis_permutation(transform: np.ndarray) -> tuple[list[int], list[int], list[int]] | None:
    """``(source_axis, sign, offset)`` per target axis if ``transform`` (target voxel -> source
    voxel) is a signed permutation plus an integer shift, else ``None``."""
    matrix, shift = transform[:3, :3], transform[:3, 3]
    rounded, rounded_shift = np.rint(matrix), np.rint(shift)
    if np.abs(matrix - rounded).max() > EXACT_TOLERANCE_VOXELS:
        return None
    if np.abs(shift - rounded_shift).max() > EXACT_TOLERANCE_VOXELS:
        return None
    if not ((np.abs(rounded).sum(axis=0) == 1).all() and (np.abs(rounded).sum(axis=1) == 1).all()):
        return None
    source_axes = [int(np.flatnonzero(rounded[:, j])[0]) for j in range(3)]
    signs = [int(rounded[i, j]) for j, i in enumerate(source_axes)]
    offsets = [int(rounded_shift[i]) for i in source_axes]
    return source_axes, signs, offsets


def _index_exactly(
    data: np.ndarray,
    permutation: tuple[list[int], list[int], list[int]],
    shape: tuple[int, int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """Copy voxels by indexing: target index t along axis j reads source index sign*t + offset."""
    source_axes, signs, offsets = permutation
    lead = data.ndim - 3
    source = data.transpose([*range(lead), *(lead + i for i in source_axes)])
    out = np.zeros(data.shape[:lead] + shape, dtype=dtype)
    target_slices, source_slices = [], []
    for j in range(3):
        n = source.shape[lead + j]
        if signs[j] < 0:  # source index offset - t is index t + (n - 1 - offset) of the flipped axis
            source = np.flip(source, axis=lead + j)
            shift = n - 1 - offsets[j]
        else:
            shift = offsets[j]
        start, stop = max(0, -shift), min(shape[j], n - shift)
        if stop <= start:
            return out  # no overlap: all outside the source
        target_slices.append(slice(start, stop))
        source_slices.append(slice(start + shift, stop + shift))
    out[(..., *target_slices)] = source[(..., *source_slices)]
    return out


def resample_onto(
    data: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    target_affine: np.ndarray,
    order: int,
    path: str | Path = "image",
) -> np.ndarray:
    """Values of ``data`` (on grid ``affine``) at the voxel centres of the grid
    ``(shape, target_affine)``, through voxel -> world -> voxel; 0 outside the source's box.
    Only the last three entries of ``shape`` are used; leading (channel) axes come from ``data``.

    This is how images are brought onto a common grid and how predictions go back to a scan's
    own space: when the grids differ only by an axis permutation / flip / integer shift the
    result is pure indexing (bit-exact for any order); otherwise one
    ``scipy.ndimage.affine_transform`` per channel (matrix + offset, no coordinate arrays).
    Order 0 keeps the dtype; order >= 1 returns float32.
    """
    order = _check_order(order)
    source_affine = _check_affine(affine, path)
    target_affine = _check_affine(target_affine, f"{path} (target grid)")
    data = np.asarray(data)
    source_shape = _spatial_shape(data, path)
    target_shape = tuple(int(n) for n in shape)[-3:]  # a stack's shape gives its spatial grid
    if len(target_shape) != 3 or min(target_shape) < 1:
        raise ValueError(f"target shape needs 3 positive spatial sizes, got {tuple(shape)}")
    dtype = data.dtype if order == 0 else np.dtype(np.float32)
    # target voxel -> world -> source voxel, in float64
    transform = np.linalg.solve(source_affine, target_affine)

    permutation = _as_axis_permutation(transform)
    if permutation is not None:
        return _index_exactly(data, permutation, target_shape, dtype)

    source = data
    if data.dtype == np.bool_:
        source = data.view(np.uint8)
    elif order > 0 and data.dtype not in (np.float32, np.float64):
        source = data.astype(np.float32)
    out = np.empty(data.shape[:-3] + target_shape, dtype=source.dtype if order == 0 else dtype)
    # Order 0 with 'grid-constant' samples exactly the box [-0.5, n - 0.5); higher orders use
    # 'nearest' (plain 'constant' would zero everything outside [0, n - 1], losing the outer
    # half of the edge voxels) and the points outside the box are zeroed afterwards.
    mode = "grid-constant" if order == 0 else "nearest"
    for index in np.ndindex(*data.shape[:-3]):
        ndimage.affine_transform(
            source[index], transform[:3, :3], transform[:3, 3], output_shape=target_shape,
            output=out[index], order=order, mode=mode, cval=0.0,
        )
    if order > 0:
        corners = (transform @ _corner_centres(target_shape))[:3]
        upper = np.array(source_shape, dtype=np.float64)[:, None] - 0.5
        if not ((corners > -0.5 + 1e-9).all() and (corners < upper - 1e-9).all()):
            inside = ndimage.affine_transform(
                np.ones(source_shape, dtype=np.uint8), transform[:3, :3], transform[:3, 3],
                output_shape=target_shape, order=0, mode="grid-constant", cval=0,
            )
            out[..., inside == 0] = 0
    return out.view(np.bool_) if order == 0 and data.dtype == np.bool_ else out
