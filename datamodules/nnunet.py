"""nnU-Net v2 raw datasets: ``DatasetXXX_Name/{dataset.json, imagesTr, labelsTr, imagesTs}``.

Cases are named ``<case>_<channel:04d><file_ending>`` in ``imagesTr``/``imagesTs`` and
``<case><file_ending>`` in ``labelsTr``; ``dataset.json`` gives the channels
(``channel_names``), the labels (``labels``: name -> value, or name -> values for nnU-Net's
region-based training, painted back in ``regions_class_order``; ``ignore`` for unlabelled
voxels) and ``file_ending``. A dataset made by nnU-Net's own conversion scripts reads as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.export import CASE_NAMES
from core.io import ITK_SUFFIXES, DataError, require_file
from core.labels import LabelSpace
from core.nnunet import channel_modalities, nnunet_label_space, read_nnunet_description
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

FILE_ENDINGS = (".nii.gz", ".nii", *ITK_SUFFIXES)  # 3D formats nibabel or SimpleITK read


class NnUNetDataModule(VolumeSegmentationDataModule):
    """An nnU-Net v2 raw dataset (``Dataset001_Demo``): channels, labels and file ending from its
    ``dataset.json`` (saved into checkpoints, so that ``predict.py`` reads a folder of
    ``<case>_0000.nii.gz`` files with no ``dataset.json``); predictions named as nnU-Net names
    them (``<case>.nii.gz``).

    ``predict`` without ``predict_dir`` segments the test subjects; ``predict_dir`` is a dataset
    folder (its ``imagesTs``) or a folder of case files.

    Args:
        data_dir: the dataset folder (``$nnUNet_raw/Dataset001_Demo``).
        modalities: the channels to use, by name (default: all, in channel order).
        channel_names, labels, regions_class_order, file_ending: as in ``dataset.json``, which
            gives them when it is there.
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    output_names = CASE_NAMES  # nnU-Net names its predictions <case>.nii.gz

    def __init__(self, data_dir: str, modalities: Sequence[str] | None = None,
                 channel_names: Mapping[str, str] | None = None,
                 labels: Mapping[str, int | list[int]] | None = None,
                 regions_class_order: Sequence[int] | None = None, file_ending: str | None = None,
                 **kwargs: Any) -> None:
        given = {"channel_names": channel_names, "labels": labels, "regions_class_order": regions_class_order,
                 "file_ending": file_ending}
        source = str(Path(data_dir) / "dataset.json")
        self.num_training: int | None = None  # dataset.json's count of imagesTr's cases, checked when they are found
        if (Path(data_dir) / "dataset.json").is_file():
            description = read_nnunet_description(Path(data_dir))
            given.update({k: description.get(k) for k in given})
            self.num_training = description.get("numTraining")
        elif channel_names is None or labels is None or file_ending is None:
            raise DataError(f"{source}: file not found (an nnU-Net raw dataset folder holds dataset.json; for a "
                            "folder of cases alone give channel_names, labels and file_ending)")
        if given["file_ending"] not in FILE_ENDINGS:
            raise DataError(f"{source}: file_ending {given['file_ending']!r} is not a 3D format read here "
                            f"({', '.join(FILE_ENDINGS)})")
        self.file_ending = str(given["file_ending"])
        self.available_modalities = channel_modalities(given["channel_names"], source)
        self._label_space = nnunet_label_space(given["labels"], given["regions_class_order"], source)
        super().__init__(data_dir, modalities=modalities, **kwargs)
        self.save_hyperparameters({**self.hparams, **given})  # checkpoints read case folders without dataset.json

    @property
    def label_space(self) -> LabelSpace:
        return self._label_space

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        if require_labels:
            images, labels = folder / "imagesTr", folder / "labelsTr"
        else:
            images, labels = (folder / "imagesTs" if (folder / "imagesTs").is_dir() else folder), None
        if not images.is_dir():
            raise DataError(f"{images}: folder not found (an nnU-Net raw dataset has imagesTr, labelsTr, imagesTs)")
        ending = self.file_ending
        case_file = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
        cases: dict[str, set[int]] = {}
        for path in images.iterdir():
            if match := case_file.match(path.name):
                cases.setdefault(match["case"], set()).add(int(match["channel"]))
        if not cases:
            raise NoSubjectsFound(f"{images}: no cases found (expected files like <case>_0000{ending})")
        channels = [self.available_modalities.index(m) for m in self.modalities]
        subjects = []
        for case in sorted(cases, key=natural_key):
            files = tuple(images / f"{case}_{channel:04d}{ending}" for channel in channels)
            for channel, path in zip(channels, files, strict=True):
                if channel not in cases[case]:
                    raise DataError(f"{path}: file not found (case {case} lacks channel {channel}, "
                                    f"{self.available_modalities[channel]})")
            label = None
            if labels is not None:
                label = labels / f"{case}{ending}"
                require_file(label, f"case {case} has no label map")
            subjects.append(Subject(case, files, label))
        if labels is not None:
            self._check_labels_have_images(labels, set(cases), ending)
            if self.num_training is not None and int(self.num_training) != len(subjects):
                raise DataError(f"{folder / 'dataset.json'}: numTraining is {self.num_training}, {images} holds "
                                f"{len(subjects)} cases")
        return subjects

    @staticmethod
    def _check_labels_have_images(labels: Path, cases: set[str], ending: str) -> None:
        orphans = sorted(p.name for p in labels.iterdir() if p.name.endswith(ending)
                         and p.name[: -len(ending)] not in cases)
        if orphans:
            raise DataError(f"{labels}: label maps without images: {orphans[:5]}{' ...' if len(orphans) > 5 else ''}")
