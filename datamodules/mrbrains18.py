"""MRBrainS18 (adult 3T): ``training/<id>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz`` + ``<id>/segm.nii.gz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from core.dataset_labels import MRBRAINS18, MRBRAINS18_THESIS
from core.io import require_file
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

MODALITY_FILES = {"T1": "reg_T1.nii.gz", "IR": "reg_IR.nii.gz", "FLAIR": "FLAIR.nii.gz"}


class MRBrainS18DataModule(VolumeSegmentationDataModule):
    """MRBrainS18: T1, T1-IR and FLAIR from each subject's ``pre/`` folder (bias-corrected and
    registered to FLAIR), 240 x 240 x 48 at 0.96 x 0.96 x 3 mm.

    Point ``data_dir`` at ``training/`` (subjects ``1, 4, 5, 7, 14, 070, 148``; ids are the
    folder names, ordered by number).

    Args:
        label_mode: ``full``: the challenge's 8 structures + background; ``thesis``: the
            thesis' background / CSF {5, 6} / GM {1, 2} / WM {3, 4}. In the thesis mode the
            cerebellum (7) and brain stem (8) are *ignored*: each mixes grey and white matter,
            which the 3-tissue task cannot split, and the MRBrainS13 3-tissue evaluation
            excluded them too; calling them background would teach the network to erase
            brain tissue. In both modes 9 (infarction) and 10 (other) are ignored, as in the
            challenge: they count in no loss and no metric.
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    available_modalities = tuple(MODALITY_FILES)

    def __init__(self, data_dir: str, label_mode: Literal["thesis", "full"] = "full", **kwargs: Any) -> None:
        if label_mode not in ("thesis", "full"):
            raise ValueError(f"label_mode must be 'thesis' or 'full', got {label_mode!r}")
        self.label_mode = label_mode
        super().__init__(data_dir, **kwargs)

    @property
    def label_space(self) -> LabelSpace:
        return MRBRAINS18_THESIS if self.label_mode == "thesis" else MRBRAINS18

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        ids = sorted((p.name for p in folder.iterdir() if p.is_dir() and (p / "pre").is_dir()), key=natural_key)
        if not ids:
            raise NoSubjectsFound(f"{folder}: no MRBrainS18 subjects found (expected <id>/pre/FLAIR.nii.gz, "
                                  f"<id>/segm.nii.gz; point data_dir at the 'training' folder)")
        subjects = []
        for subject_id in ids:
            root = folder / subject_id
            images = tuple(root / "pre" / MODALITY_FILES[m] for m in self.modalities)
            for path in images:
                require_file(path, f"subject {subject_id} lacks this modality")
            label = root / "segm.nii.gz"
            if require_labels:
                require_file(label, f"subject {subject_id} has no segmentation")
            subjects.append(Subject(subject_id, images, label if require_labels else None))
        return subjects
