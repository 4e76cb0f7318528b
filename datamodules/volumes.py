"""Subjects on disk -> preprocessed in-memory volumes, and the datasets built on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.io import check_same_grid, load_volume
from datamodules.patches import ForegroundPatchSampler, pad_to_patch, worker_rng
from datamodules.preprocessing import map_labels, zscore_nonzero


@dataclass(frozen=True)
class Subject:
    """Where one subject's files are: one image per modality (in channel order), maybe a label."""

    subject_id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass
class Volume:
    """One subject, loaded and preprocessed: ``image`` (C, D, H, W) float32 z-scored,
    ``label`` (D, H, W) int64 class indices or None, and the source affine."""

    subject_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray


def load_subject(subject: Subject, value_to_class: Mapping[int, int] | None) -> Volume:
    """Read, check and preprocess one subject.

    Every modality and the label must share the first modality's shape and affine; each
    modality is z-scored over its non-zero voxels; label values are mapped to classes.
    """
    first_path = subject.images[0]
    first, affine = load_volume(first_path)
    reference = (first_path, first, affine)
    channels = [zscore_nonzero(first, first_path)]
    for path in subject.images[1:]:
        data, data_affine = load_volume(path)
        check_same_grid(reference, (path, data, data_affine))
        channels.append(zscore_nonzero(data, path))
    label = None
    if subject.label is not None and value_to_class is not None:
        raw, label_affine = load_volume(subject.label)
        check_same_grid(reference, (subject.label, raw, label_affine))
        label = map_labels(raw, value_to_class, subject.label)
    return Volume(subject.subject_id, np.stack(channels), label, affine)


class PatchDataset(Dataset):
    """``samples_per_volume`` random foreground patches per volume and epoch (training)."""

    def __init__(self, volumes: Sequence[Volume], patch_size: Sequence[int], samples_per_volume: int,
                 min_foreground_voxels: int = 1) -> None:
        if samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        missing = [v.subject_id for v in volumes if v.label is None]
        if missing:
            raise ValueError(f"training needs label maps; these subjects have none: {missing}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_volume = samples_per_volume
        self.images = [pad_to_patch(v.image, self.patch_size) for v in volumes]
        self.labels = [pad_to_patch(v.label, self.patch_size) for v in volumes]
        self.samplers = [
            ForegroundPatchSampler(label, self.patch_size, min_foreground_voxels, name=v.subject_id)
            for label, v in zip(self.labels, volumes, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.images) * self.samples_per_volume

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        v = index // self.samples_per_volume
        z, y, x = self.samplers[v].sample(worker_rng())
        pd, ph, pw = self.patch_size
        window = (slice(z, z + pd), slice(y, y + ph), slice(x, x + pw))
        image = self.images[v][(slice(None), *window)]
        label = self.labels[v][window]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "label": torch.from_numpy(np.ascontiguousarray(label))[None],
        }


class VolumeDataset(Dataset):
    """Whole volumes, one per item (validation, test, prediction)."""

    def __init__(self, volumes: Sequence[Volume]) -> None:
        self.volumes = list(volumes)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> dict[str, object]:
        v = self.volumes[index]
        item: dict[str, object] = {
            "image": torch.from_numpy(v.image),
            "subject": v.subject_id,
            "affine": torch.from_numpy(v.affine),
        }
        if v.label is not None:
            item["label"] = torch.from_numpy(v.label)[None]
        return item
