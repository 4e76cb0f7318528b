"""BraTS 2018-2021 (gliomas): one folder per case, ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.dataset_labels import BRATS, BRATS_REGIONS
from core.io import DataError
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import VolumeSegmentationDataModule

MODALITY_SUFFIXES = {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"}
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _modality_file(case: Path, suffix: str) -> Path | None:
    """``<case>/<anything>_<suffix>.nii[.gz]`` (case-insensitive), or None."""
    pattern = re.compile(rf"_{suffix}\.nii(\.gz)?$", re.IGNORECASE)
    matches = sorted(p for p in case.iterdir() if pattern.search(p.name))
    if len(matches) > 1:
        raise DataError(f"{case}: several {suffix} images: {[p.name for p in matches]}")
    return matches[0] if matches else None


def _segmentation_file(case: Path) -> Path | None:
    """The case's label file, found by name *within the case folder* (never by zipping sorted
    lists): ``<case>_seg.nii.gz``, or else the one NIfTI file whose name holds "seg" (one
    BraTS 2020 case ships ``W39_1998.09.19_Segm.nii``)."""
    candidates = sorted(p for p in case.iterdir() if _NIFTI.search(p.name) and "seg" in p.name.lower())
    exact = [p for p in candidates if _NIFTI.sub("", p.name).lower() == f"{case.name.lower()}_seg"]
    if exact:
        return exact[0]
    if len(candidates) > 1:
        raise DataError(f"{case}: several possible segmentations: {[p.name for p in candidates]}")
    return candidates[0] if candidates else None


class BraTSDataModule(VolumeSegmentationDataModule):
    """BraTS 2018, 2019, 2020 and 2021 training (or validation) folders as shipped.

    ``data_dir`` is searched recursively for case folders, so ``MICCAI_BraTS_2018_Data_Training``
    (cases under ``HGG/`` and ``LGG/``), ``MICCAI_BraTS2020_TrainingData`` (flat
    ``BraTS20_Training_NNN/``) and the 2021 ``BraTS2021_NNNNN/`` folders all work. The case
    id is the folder name; each image and the segmentation are matched within the case folder.

    Labels 0, 1 (necrotic / non-enhancing core), 2 (oedema), 4 (enhancing tumour); there is
    no 3. Written back with the same values.

    Args:
        region_based: train one sigmoid output per evaluated region, whole tumour {1, 2, 4},
            tumour core {1, 4} and enhancing tumour {4}, and report their Dice; otherwise
            softmax over the four classes.
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    available_modalities = tuple(MODALITY_SUFFIXES)

    def __init__(self, data_dir: str, region_based: bool = False, **kwargs: Any) -> None:
        self.region_based = region_based
        super().__init__(data_dir, **kwargs)

    @property
    def label_space(self) -> LabelSpace:
        return BRATS_REGIONS if self.region_based else BRATS

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        cases = sorted({p.parent for p in folder.rglob("*") if re.search(r"_flair\.nii(\.gz)?$", p.name, re.I)},
                       key=lambda p: natural_key(p.name))
        if not cases:
            raise DataError(f"{folder}: no BraTS cases found (expected <case>/<case>_flair.nii.gz, ...)")
        seen: dict[str, Path] = {}
        subjects = []
        for case in cases:
            if case.name in seen:
                raise DataError(f"{case}: case id {case.name} also in {seen[case.name]}")
            seen[case.name] = case
            images = []
            for modality in self.modalities:
                path = _modality_file(case, MODALITY_SUFFIXES[modality])
                if path is None:
                    raise DataError(f"{case}: no {modality} image ({case.name}_{MODALITY_SUFFIXES[modality]}.nii.gz)")
                images.append(path)
            label = _segmentation_file(case) if require_labels else None
            if require_labels and label is None:
                raise DataError(f"{case}: case {case.name} has no segmentation ({case.name}_seg.nii.gz)")
            subjects.append(Subject(case.name, tuple(images), label))
        return subjects
