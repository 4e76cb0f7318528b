"""Intensity preprocessing for skull-stripped MRI: N4 bias-field correction, percentile clipping, z-score.

Both work on the non-zero voxels only: skull-stripped scans have an exact-zero background that
must neither drive the statistics nor be changed (it doubles as the brain mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.io import DataError

N4_REQUIREMENT = "SimpleITK==2.5.7"  # optional: only N4 needs it (requirements.txt installs it)


def simpleitk() -> Any:
    """SimpleITK, imported when N4 is asked for: the package imports and trains without it."""
    try:
        import SimpleITK
    except ImportError as error:
        raise DataError(f"N4 bias-field correction (data.init_args.n4_bias_correction: true) needs SimpleITK, "
                        f"which is not installed here: pip install {N4_REQUIREMENT}") from error
    return SimpleITK


def clip_percentiles(image: np.ndarray, low: float, high: float, path: str | Path = "image") -> np.ndarray:
    """Clip to the ``[low, high]`` percentiles (0..100) of the NON-ZERO voxels; zeros stay zero.

    Tames hot spots (vessels, artefacts) before normalisation without letting the background,
    often most of the volume, pull the low percentile to 0. Percentiles use numpy's default
    linear interpolation. Returns a new array, float32 unless the input is already floating.
    """
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    foreground = image != 0
    values = image[foreground]
    if values.size == 0:
        raise DataError(f"{path}: image is all zero, no foreground to take percentiles of")
    if not np.isfinite(values).all():
        raise DataError(f"{path}: {int((~np.isfinite(values)).sum())} voxels are NaN or infinite")
    lower, upper = np.percentile(values, [low, high])
    out = np.zeros_like(image)
    out[foreground] = np.clip(values, lower, upper)
    return out


def _to_sitk(array: np.ndarray, spacing: Sequence[float]) -> Any:
    """numpy ``(D, H, W)`` -> SimpleITK image. ``GetImageFromArray`` reverses the axes (ITK index
    is ``(x, y, z)`` = numpy ``(W, H, D)``), so the spacing is reversed as well."""
    image = simpleitk().GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    return image


def n4_bias_correction(
    image: np.ndarray,
    spacing: Sequence[float],
    path: str | Path = "image",
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
) -> np.ndarray:
    """N4 bias-field correction (SimpleITK) over the non-zero voxels (the brain).

    Removes the smooth multiplicative intensity inhomogeneity of MR scans, so one tissue has one
    intensity across the volume. For speed, the field is fitted on the image shrunk by
    ``shrink_factor`` (one fitting level per entry of ``iterations``), then its log is evaluated
    at full resolution (``GetLogBiasFieldAsImage`` of the full image) and divided out.
    ``spacing`` is the voxel size in mm in numpy axis order ``(D, H, W)``; it sets the physical
    smoothness of the B-spline field. Zero voxels stay zero; returns float32, same shape.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise DataError(f"{path}: N4 needs a 3D volume, got shape {image.shape}")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    if shrink_factor < 1 or not iterations or min(iterations) < 1:
        raise ValueError(f"need shrink_factor >= 1 and positive iterations, got {shrink_factor}, {iterations}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise DataError(f"{path}: {int((~np.isfinite(image)).sum())} voxels are NaN or infinite")
    if image.min() < 0:
        raise DataError(f"{path}: has negative intensities (min {image.min():g}); N4 needs a non-negative image")
    mask = image > 0
    if not mask.any():
        raise DataError(f"{path}: image is all zero, nothing to bias-correct")

    sitk = simpleitk()
    full = _to_sitk(image, spacing)
    full_mask = _to_sitk(mask.astype(np.uint8), spacing)
    factors = [max(1, min(int(shrink_factor), n)) for n in full.GetSize()]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    try:
        corrector.Execute(sitk.Shrink(full, factors), sitk.Shrink(full_mask, factors))
        log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(full))
    except RuntimeError as error:  # e.g. too few foreground voxels left after shrinking
        raise DataError(f"{path}: N4 bias correction failed ({error})") from error
    corrected = np.zeros_like(image)
    corrected[mask] = image[mask] / np.exp(log_bias[mask])
    return corrected


def zscore_nonzero(image: np.ndarray, path: Path | str = "image") -> np.ndarray:
    """Z-score over the non-zero voxels (the thesis' normalisation); zero voxels stay zero.

    Skull-stripped MRI has an exact-zero background; normalising over the brain only keeps
    the background from dominating the statistics, and keeps it at 0 so padding with 0 is
    padding with background.
    """
    mask = image != 0
    if not mask.any():
        raise DataError(f"{path}: every voxel is zero; nothing to normalise")
    values = image[mask].astype(np.float64)  # float32 statistics overflow for huge intensities
    std = float(values.std())
    if std == 0.0:
        raise DataError(f"{path}: every non-zero voxel has the same value {values[0]}; cannot z-score")
    out = np.zeros_like(image, dtype=np.float32)
    out[mask] = (values - values.mean()) / std
    if not np.isfinite(out).all() or not np.isfinite(std):
        raise DataError(f"{path}: intensities of magnitude {np.abs(values).max():.3g} give non-finite values "
                        "after normalisation")
    return out
