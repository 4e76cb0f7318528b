"""The shared DataModule: subject discovery is per dataset, everything else lives here."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.io import DataError
from datamodules.volumes import PatchDataset, Subject, Volume, VolumeDataset, load_subject


class VolumeSegmentationDataModule(pl.LightningDataModule):
    """Multi-modal 3D segmentation data: training on foreground patches, validation, test
    and prediction on whole volumes.

    A dataset subclass sets ``available_modalities`` and ``label_values`` (dataset value ->
    class name, background first) and implements :meth:`find_subjects`.

    Args:
        data_dir: the dataset's labelled training folder, exactly as the challenge ships it.
        modalities: which modalities to stack as input channels, in this order.
        val_subjects: subject ids held out for validation (model selection).
        test_subjects: subject ids held out for the final test; never trained on.
        train_subjects: subject ids to train on; default: every subject not held out.
        predict_dir: folder (same layout, labels not needed) to segment with ``predict``;
            default: the test subjects.
        patch_size: training patch, also the sliding-window size at inference.
        samples_per_volume: patches drawn from each training volume per epoch.
        min_foreground_voxels: a training patch must hold at least this many labelled voxels.
    """

    available_modalities: tuple[str, ...] = ()
    label_values: dict[int, str] = {}

    def __init__(
        self,
        data_dir: str,
        modalities: Sequence[str] | None = None,
        val_subjects: Sequence[str] = (),
        test_subjects: Sequence[str] = (),
        train_subjects: Sequence[str] | None = None,
        predict_dir: str | None = None,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        batch_size: int = 2,
        samples_per_volume: int = 8,
        min_foreground_voxels: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.modalities = tuple(modalities) if modalities else self.available_modalities
        unknown = [m for m in self.modalities if m not in self.available_modalities]
        if unknown or not self.modalities:
            raise ValueError(
                f"{type(self).__name__}: unknown modalities {unknown}; available: {list(self.available_modalities)}"
            )
        self.val_subjects = list(val_subjects)
        self.test_subjects = list(test_subjects)
        self.train_subjects = None if train_subjects is None else list(train_subjects)
        self.predict_dir = Path(predict_dir) if predict_dir else None
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        self.min_foreground_voxels = min_foreground_voxels
        self.num_workers = num_workers
        self._volumes: dict[tuple[Subject, bool], Volume] = {}  # loaded once per process
        self._subjects: dict[str, Subject] | None = None

    # What the model needs to know (linked into SegmentationModule by train.py).
    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    @property
    def class_names(self) -> list[str]:
        return list(self.label_values.values())

    @property
    def class_values(self) -> list[int]:
        """The dataset's own label value of each class (to write predictions back)."""
        return list(self.label_values)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def value_to_class(self) -> dict[int, int]:
        return {value: index for index, value in enumerate(self.label_values)}

    @abstractmethod
    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        """Subjects in ``folder`` in their natural order, images in ``self.modalities`` order.

        Raise :class:`DataError` naming the missing file when a subject lacks a modality (or
        its label when ``require_labels``), and when the folder holds no subject at all.
        """

    # Splits.
    def _find(self, folder: Path, require_labels: bool) -> list[Subject]:
        if not folder.is_dir():
            raise DataError(f"{folder}: dataset folder not found")
        return self.find_subjects(folder, require_labels)

    def subjects(self) -> dict[str, Subject]:
        """The labelled subjects of ``data_dir`` by id, in the dataset's natural order."""
        if self._subjects is None:
            self._subjects = {s.subject_id: s for s in self._find(self.data_dir, require_labels=True)}
        return self._subjects

    def _select(self, ids: Sequence[str], role: str) -> list[Subject]:
        subjects = self.subjects()
        unknown = [i for i in ids if str(i) not in subjects]
        if unknown:
            raise DataError(
                f"{self.data_dir}: {role} subjects {unknown} not found; available: {list(subjects)}"
            )
        return [subjects[str(i)] for i in ids]

    def split(self) -> dict[str, list[Subject]]:
        """``{"train", "val", "test"}`` subject lists; training never includes a test subject."""
        val = self._select(self.val_subjects, "validation")
        test = self._select(self.test_subjects, "test")
        held_out = {s.subject_id for s in val + test}
        if self.train_subjects is None:
            train = [s for s in self.subjects().values() if s.subject_id not in held_out]
        else:
            train = self._select(self.train_subjects, "training")
            leaked = sorted({s.subject_id for s in train} & {s.subject_id for s in test})
            if leaked:
                raise DataError(f"subjects {leaked} are in both the training and the test set")
        return {"train": train, "val": val, "test": test}

    def _load(self, subjects: Sequence[Subject], with_labels: bool = True) -> list[Volume]:
        value_to_class = self.value_to_class if with_labels else None
        for s in subjects:
            if (s, with_labels) not in self._volumes:
                self._volumes[(s, with_labels)] = load_subject(s, value_to_class)
        return [self._volumes[(s, with_labels)] for s in subjects]

    def setup(self, stage: str) -> None:
        split = self.split()
        if stage == "fit":
            if not split["train"]:
                raise DataError(f"{self.data_dir}: no training subjects left after holding out val/test")
            self.train_set = PatchDataset(self._load(split["train"]), self.patch_size,
                                          self.samples_per_volume, self.min_foreground_voxels)
        if stage in ("fit", "validate"):
            self.val_set = VolumeDataset(self._load(split["val"]))
        if stage == "test":
            self.test_set = VolumeDataset(self._load(split["test"]))
        if stage == "predict":
            if self.predict_dir is None:
                subjects = split["test"]
            else:
                subjects = self._find(self.predict_dir, require_labels=False)
            self.predict_set = VolumeDataset(self._load(subjects, with_labels=False))

    # Loaders.
    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=len(self.train_set) >= self.batch_size,
        )

    def _whole_volumes(self, dataset: VolumeDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.predict_set)
