"""The torch datasets: random training patches, and whole volumes for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from core.volumes import Subject, Volume
from datamodules.patches import build_sampler, crop_patch, worker_rng

Augment = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


class PatchDataset(Dataset):
    """``samples_per_volume`` random patches per volume and epoch, each cropped from the
    (possibly memory-mapped) volume and augmented when ``augment`` is given. With ``length``,
    an epoch is that many patches instead, the volumes taking turns. ``overhang``: patches may
    hang over the volume by half their size on every side (volumes cropped to their brain's box,
    so that the empty space beyond it is still seen)."""

    def __init__(self, volumes: Sequence[Volume], patch_size: Sequence[int], samples_per_volume: int,
                 sampling: str = "foreground", min_foreground_voxels: int = 1,
                 class_balanced_fraction: float = 0.33, augment: Augment | None = None,
                 length: int | None = None, overhang: bool = False) -> None:
        if samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        missing = [v.subject_id for v in volumes if v.label is None]
        if missing:
            raise ValueError(f"training needs label maps; these subjects have none: {missing}")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_volume = samples_per_volume
        self.length = length
        self.augment = augment
        overhangs = tuple(p // 2 for p in self.patch_size) if overhang else (0, 0, 0)
        self.samplers = [
            build_sampler(sampling, v.label, self.patch_size, min_foreground_voxels=min_foreground_voxels,
                          class_balanced_fraction=class_balanced_fraction, name=v.subject_id, overhang=overhangs)
            for v in self.volumes
        ]

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.volumes) * self.samples_per_volume

    def _volume_index(self, index: int) -> int:
        return index % len(self.volumes) if self.length is not None else index // self.samples_per_volume

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        which = self._volume_index(index)
        volume = self.volumes[which]
        rng = worker_rng()
        corner = self.samplers[which].sample(rng)
        image = torch.from_numpy(crop_patch(volume.image, corner, self.patch_size))
        label = torch.from_numpy(crop_patch(volume.label, corner, self.patch_size).astype(np.int64))[None]
        if self.augment is not None:
            image, label = self.augment(image, label, rng)
        return {"image": image, "label": label}


class ReadOnDemand(Sequence[Volume]):
    """Subjects' volumes read (and preprocessed) when asked for, one at a time: prediction holds
    one volume at a time, and reads none before its output folder is checked."""

    def __init__(self, subjects: Sequence[Subject], read: Callable[[Subject], Volume]) -> None:
        self.subjects, self.read = list(subjects), read

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> Volume:  # type: ignore[override]
        return self.read(self.subjects[index])


class VolumeDataset(Dataset):
    """Whole volumes, one per item (validation, test, prediction), with the grids needed to
    write a prediction back into the scan's own space."""

    def __init__(self, volumes: Sequence[Volume]) -> None:
        self.volumes = volumes  # a list, or volumes read on demand (ReadOnDemand)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> dict[str, object]:
        v = self.volumes[index]
        item: dict[str, object] = {
            "image": torch.from_numpy(np.array(v.image, dtype=np.float32)),
            "subject": v.subject_id,
            "affine": torch.from_numpy(v.affine),
            "original_affine": torch.from_numpy(v.original_affine),
            "original_shape": torch.tensor(v.original_shape),
        }
        if v.label is not None:
            item["label"] = torch.from_numpy(np.array(v.label, dtype=np.int64))[None]
        return item
