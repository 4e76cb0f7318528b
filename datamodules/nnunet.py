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

from core.export import OutputNames
from core.io import ITK_SUFFIXES, DataError
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import VolumeSegmentationDataModule
from datamodules.decathlon import read_dataset_json

FILE_ENDINGS = (".nii.gz", ".nii", *ITK_SUFFIXES)  # 3D formats nibabel or SimpleITK read
NNUNET_NAMES = OutputNames(segmentation="{subject}.nii.gz", probabilities="{subject}_probabilities.nii.gz")


def read_nnunet_description(folder: Path) -> dict[str, Any]:
    """``folder/dataset.json``, checked for what reading the dataset needs (nnU-Net v1's
    ``modality`` read as ``channel_names``)."""
    description = read_dataset_json(folder, required=("labels", "file_ending"),
                                    kind="an nnU-Net raw dataset folder")
    if "channel_names" not in description and "modality" in description:
        description["channel_names"] = description["modality"]
    if "channel_names" not in description:
        raise DataError(f"{Path(folder) / 'dataset.json'}: missing keys ['channel_names']")
    return description


def channel_modalities(channel_names: Mapping[str, str], source: str) -> tuple[str, ...]:
    """Modality names in channel order; a name two channels share gets its channel number
    (``MRI_0000``, ``MRI_0001``), so every channel can be chosen by name."""
    try:
        order = sorted((int(index), str(name)) for index, name in channel_names.items())
    except ValueError as error:
        raise DataError(f"{source}: channel_names keys must be channel numbers ('0', '1', ...)") from error
    if [index for index, _ in order] != list(range(len(order))):
        raise DataError(f"{source}: channel_names must number the channels 0..{len(order) - 1}, got "
                        f"{[index for index, _ in order]}")
    names = [name for _, name in order]
    return tuple(name if names.count(name) == 1 else f"{name}_{index:04d}" for index, name in order)


def nnunet_label_space(labels: Mapping[str, int | Sequence[int]], regions_class_order: Sequence[int] | None,
                       source: str) -> LabelSpace:
    """nnU-Net's ``labels`` as a label space: one class per value; with region labels (a name
    -> several values), one region each, painted back in ``regions_class_order`` as nnU-Net does
    (``ignore``: the value counted nowhere)."""
    labels = dict(labels)
    ignore = labels.pop("ignore", None)
    if labels.get("background") != 0:
        raise DataError(f"{source}: labels must map 'background' to 0, got {labels.get('background')!r}")
    if isinstance(ignore, list):
        raise DataError(f"{source}: the ignore label must be one value, got {ignore}")
    ignored = [] if ignore is None else [int(ignore)]
    regions = {name: [int(v) for v in value] for name, value in labels.items()
               if isinstance(value, list) and name != "background"}
    if not regions:
        return LabelSpace.from_values({int(v): name for name, v in sorted(labels.items(), key=lambda i: int(i[1]))},
                                      ignore=ignored)
    singles = [name for name, value in labels.items() if not isinstance(value, list) and name != "background"]
    if singles:
        regions.update({name: [int(labels[name])] for name in singles})
    if regions_class_order is None or len(regions_class_order) != len(regions):
        raise DataError(f"{source}: region labels {list(regions)} need regions_class_order, one value per region, "
                        f"got {regions_class_order}")
    order = [int(v) for v in regions_class_order]
    values = sorted({v for members in regions.values() for v in members})
    if sorted(order) != values:
        raise DataError(f"{source}: regions_class_order {order} must list each label value {values} once")
    region_of = dict(zip(order, regions, strict=True))  # the value each region paints -> the region's name
    space = LabelSpace.from_values({0: "background", **{v: region_of[v] for v in values}}, ignore=ignored)
    space = space.with_regions(regions)
    painted = [space.class_values[c] for c in space.paint_classes]
    if painted != order:
        raise DataError(f"{source}: regions {regions} paint the values {painted} in order, regions_class_order says "
                        f"{order}; order the regions from the largest to the smallest")
    return space


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

    output_names = NNUNET_NAMES

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
            raise DataError(f"{images}: no cases found (expected files like <case>_0000{ending})")
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
                if not label.is_file():
                    raise DataError(f"{label}: file not found (case {case} has no label map)")
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
