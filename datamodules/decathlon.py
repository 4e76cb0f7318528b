"""Medical Segmentation Decathlon tasks: ``dataset.json`` + 4D NIfTI images (modalities on axis 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.io import DataError
from core.labels import LabelSpace
from core.nnunet import read_dataset_json
from core.volumes import Subject
from datamodules.base import VolumeSegmentationDataModule


def _subject_id(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class DecathlonDataModule(VolumeSegmentationDataModule):
    """A Decathlon task folder (e.g. ``Task01_BrainTumour``): modalities, labels and the
    training list come from its ``dataset.json``; images are 4D NIfTI (one volume per
    modality, ``modality`` gives their order), or 3D for single-modality tasks.

    ``predict`` without ``predict_dir`` segments the test subjects; with ``predict_dir``
    pointing at a task folder, its ``dataset.json``'s ``test`` list.
    """

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        self.description = read_dataset_json(Path(data_dir))
        order = sorted(self.description["modality"].items(), key=lambda item: int(item[0]))
        self.available_modalities = tuple(name for _, name in order)
        super().__init__(data_dir, **kwargs)

    @property
    def label_space(self) -> LabelSpace:
        labels = sorted(((int(v), name) for v, name in self.description["labels"].items()))
        return LabelSpace.from_values(dict(labels))

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        description = self.description if folder == self.data_dir else read_dataset_json(folder)
        entries = description["training"] if require_labels else description.get("test", [])
        if not entries:
            which = "training" if require_labels else "test"
            raise DataError(f"{folder / 'dataset.json'}: its '{which}' list is empty")
        channels = tuple(self.available_modalities.index(m) for m in self.modalities)
        subjects = []
        for entry in entries:
            image = entry["image"] if isinstance(entry, dict) else entry
            path = (folder / image).resolve()
            if not path.is_file():
                raise DataError(f"{path}: file not found (listed in {folder / 'dataset.json'})")
            label = None
            if require_labels:
                label = (folder / entry["label"]).resolve()
                if not label.is_file():
                    raise DataError(f"{label}: file not found (listed in {folder / 'dataset.json'})")
            subjects.append(Subject(_subject_id(image), (path,) * len(channels), label, channels))
        return subjects
