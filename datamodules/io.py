"""Reading images and label maps from disk, with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


class DataError(ValueError):
    """Raised for bad input data; the message names the file and what is wrong with it."""


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D image (NIfTI or Analyze) as ``(float32 array, 4x4 affine)``.

    A trailing singleton 4th axis is dropped; anything else that is not 3D is an error, as
    are unreadable or truncated files and NaN or infinite voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types for corrupt or truncated files
        raise DataError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {bad} voxels are NaN or infinite")
    return data, np.asarray(image.affine, dtype=np.float64)


def check_same_grid(
    reference: tuple[Path, np.ndarray, np.ndarray],
    other: tuple[Path, np.ndarray, np.ndarray],
    affine_tolerance: float = 1e-3,
) -> None:
    """Raise unless two volumes share shape and (within ``affine_tolerance``) affine."""
    ref_path, ref_data, ref_affine = reference
    path, data, affine = other
    if data.shape != ref_data.shape:
        raise DataError(f"{path}: shape {data.shape} differs from {ref_path.name} {ref_data.shape}")
    if not np.allclose(affine, ref_affine, atol=affine_tolerance):
        raise DataError(
            f"{path}: affine differs from {ref_path.name}'s\n{np.round(affine, 4)}\nvs\n{np.round(ref_affine, 4)}"
        )
