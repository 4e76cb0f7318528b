"""Subjects on disk -> checked, preprocessed volumes: the one pipeline every dataset shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.geometry import (
    grid_offset,
    reorient_like,
    reorient_to_canonical,
    resample_onto,
    resample_to_spacing,
    same_grid,
    voxel_spacing,
)
from core.intensity import clip_percentiles, n4_bias_correction, zscore_nonzero
from core.io import DataError, load_volume
from core.labels import LabelSpace


def natural_key(text: str) -> tuple[list[int | str], str]:
    """The one subject ordering (every DataModule, ``evaluate.py``): numbers by value, so
    ``sub-2`` comes before ``sub-10`` and ``070`` counts as 70; equal values (``9``, ``09``)
    then by the text itself, so the order never depends on how a folder lists its files."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)], text


@dataclass(frozen=True)
class Subject:
    """Where one subject's files are: one image per modality (in channel order), maybe a label.

    ``image_channels`` is set when modalities are volumes of 4D files (the Decathlon): the
    4th-axis index of each image, which then may all be the same path. ``brain_mask``: a mask
    (non-zero inside the brain) whose outside is set to 0 in every image before normalisation,
    as a skull-stripped scan's background is (given at prediction, for scans that are not).
    """

    subject_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    image_channels: tuple[int, ...] | None = None
    brain_mask: Path | None = None

    def files(self) -> list[Path]:
        """Every source file (for cache keys), the ``.img`` half of Analyze pairs included."""
        listed = [*dict.fromkeys(self.images), *([self.label] if self.label else []),
                  *([self.brain_mask] if self.brain_mask else [])]
        return [f for p in listed for f in ([p, p.with_suffix(".img")] if p.suffix == ".hdr" else [p])]


@dataclass(frozen=True)
class PreprocessingSettings:
    """What happens to a subject between disk and network, in this order: reorientation to
    RAS+, resampling of the other modalities onto the first one's grid (only when allowed;
    otherwise they must already share it), resampling to ``target_spacing``, the crop to the
    box of non-zero voxels (``crop_to_nonzero``, nnU-Net's), N4 bias-field correction,
    percentile clipping, and the z-score over non-zero voxels (the thesis).

    Images are resampled linearly (no overshoot: the zero background stays exactly zero, which
    the non-zero z-score relies on), labels by nearest neighbour."""

    canonical_orientation: bool = True
    resample_to_first: bool = False
    affine_tolerance: float = 1e-3
    target_spacing: tuple[float, float, float] | None = None
    n4_bias_correction: bool = False
    clip_percentiles: tuple[float, float] | None = None
    crop_to_nonzero: bool = False

    def describe(self) -> dict:
        described = asdict(self)
        if not self.crop_to_nonzero:  # as before the option: the cache entries made then stay valid
            del described["crop_to_nonzero"]
        return described

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> PreprocessingSettings:
        """The settings among a DataModule's saved arguments (a checkpoint's); defaults for the rest."""
        settings = {f.name: hparams[f.name] for f in fields(cls) if hparams.get(f.name) is not None}
        for name in ("target_spacing", "clip_percentiles"):
            if name in settings:
                settings[name] = tuple(float(v) for v in settings[name])
        return cls(**settings)


@dataclass
class Volume:
    """One subject, preprocessed: ``image`` (C, D, H, W) float32, ``label`` (D, H, W) int16
    class indices (``IGNORE_INDEX`` where ignored) or None, the grid they are on
    (``affine``), and the scan's own grid to write predictions back onto."""

    subject_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]


def _onto_reference(path: Path, data: np.ndarray, affine: np.ndarray, ref: tuple[Path, np.ndarray, np.ndarray],
                    settings: PreprocessingSettings, order: int) -> np.ndarray:
    """``data`` on the reference grid: there already (within ``affine_tolerance`` mm at every
    voxel), the same grid stored in another voxel order (its axes permuted or flipped back, no
    interpolation), resampled onto it when allowed, or refused with both files named."""
    ref_path, ref_data, ref_affine = ref
    if same_grid(affine, ref_affine, data.shape, ref_data.shape, settings.affine_tolerance):
        return data
    reordered, reordered_affine = reorient_like(data, affine, ref_affine, path)
    if same_grid(reordered_affine, ref_affine, reordered.shape, ref_data.shape, settings.affine_tolerance):
        return reordered
    if settings.resample_to_first:
        return resample_onto(data, affine, ref_data.shape, ref_affine, order=order, path=path)
    remedy = "resample_to_first: true resamples it onto the first modality's grid through the affines"
    if reordered.shape != ref_data.shape:
        raise DataError(f"{path}: shape {data.shape} differs from {ref_path.name} {ref_data.shape} ({remedy})")
    offset = grid_offset(reordered_affine, ref_affine, reordered.shape)  # in the voxel order closest to it
    raise DataError(f"{path}: affine differs from {ref_path.name}'s: the same voxel lies up to {offset:.4g} mm "
                    f"apart, more than affine_tolerance {settings.affine_tolerance} mm ({remedy})")


def nonzero_box(image: np.ndarray, label: np.ndarray | None = None) -> tuple[slice, slice, slice]:
    """The smallest box holding every voxel that is non-zero in some channel of ``image`` (C, D,
    H, W) or labelled (not background) in ``label``; the whole grid when nothing is."""
    occupied = np.any(image != 0, axis=0)
    if label is not None:
        occupied |= label != 0
    boxes = [np.flatnonzero(np.any(occupied, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(b) == 0 for b in boxes):
        return (slice(None),) * 3
    return tuple(slice(int(b[0]), int(b[-1]) + 1) for b in boxes)  # type: ignore[return-value]


def crop_to_nonzero(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``image`` and ``label`` cut to :func:`nonzero_box`, and the affine of the cut grid (its
    origin moved to the box's first voxel). Only voxels that are 0 in every channel and
    unlabelled go: the box of a skull-stripped brain (ICBM152's) is 46 % of a BraTS 240x240x155
    grid, and every epoch, validation and prediction works on the box. Predictions go back to
    the scan's grid by the affines, exactly (an integer shift), background outside the box."""
    box = nonzero_box(image, label)
    start = np.array([s.start or 0 for s in box], dtype=np.float64)
    cropped_affine = np.array(affine, dtype=np.float64, copy=True)
    cropped_affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return (np.ascontiguousarray(image[(slice(None), *box)]),
            None if label is None else np.ascontiguousarray(label[box]), cropped_affine)


def load_subject(subject: Subject, label_space: LabelSpace | None, settings: PreprocessingSettings) -> Volume:
    """Read, check and preprocess one subject (``label_space=None``: ignore its label)."""
    channels = subject.image_channels or (None,) * len(subject.images)
    first_path = subject.images[0]
    first, original_affine = load_volume(first_path, channels[0])
    reference = (first_path, first, original_affine)
    stack = [first]
    for path, channel in zip(subject.images[1:], channels[1:], strict=True):
        data, affine = load_volume(path, channel)
        stack.append(_onto_reference(path, data, affine, reference, settings, order=1))
    image = np.stack(stack)
    if subject.brain_mask is not None:
        mask_data, mask_affine = load_volume(subject.brain_mask)
        inside = _onto_reference(subject.brain_mask, mask_data, mask_affine, reference, settings, order=0) != 0
        if not inside.any():
            raise DataError(f"{subject.brain_mask}: the brain mask is empty (no non-zero voxel)")
        image[:, ~inside] = 0
    label = None
    if subject.label is not None and label_space is not None:
        raw, label_affine = load_volume(subject.label)
        raw = _onto_reference(subject.label, raw, label_affine, reference, settings, order=0)
        label = label_space.encode(raw, subject.label)

    affine = original_affine
    if settings.canonical_orientation:
        image, affine = reorient_to_canonical(image, original_affine)
        if label is not None:
            label, _ = reorient_to_canonical(label, original_affine)
    if settings.target_spacing is not None:
        image, new_affine = resample_to_spacing(image, affine, settings.target_spacing, order=1)
        if label is not None:
            label, _ = resample_to_spacing(label, affine, settings.target_spacing, order=0)
        affine = new_affine
    if settings.crop_to_nonzero:
        image, label, affine = crop_to_nonzero(image, label, affine)
    processed = []
    for path, channel in zip(subject.images, image, strict=True):
        if settings.n4_bias_correction:
            channel = n4_bias_correction(channel, voxel_spacing(affine), path)
        if settings.clip_percentiles is not None:
            channel = clip_percentiles(channel, *settings.clip_percentiles, path)
        processed.append(zscore_nonzero(channel, path))
    return Volume(subject.subject_id, np.stack(processed).astype(np.float32, copy=False),
                  None if label is None else np.ascontiguousarray(label, dtype=np.int16),
                  affine, original_affine, tuple(int(s) for s in first.shape))
