"""FreeSurfer's recon-all outputs as a dataset: ``$SUBJECTS_DIR/<subject>/mri/<volume>.mgz`` with
the subject's ``aseg.mgz`` as its label map (silver-standard labels of adult brains, often by
the hundred)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from core.dataset_labels import FREESURFER_ASEG, FREESURFER_TISSUES
from core.io import require_file
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

# Subjects FreeSurfer installs or links into a SUBJECTS_DIR: templates, never a dataset's subject.
TEMPLATE_SUBJECTS = re.compile(r"^(fsaverage.*|cvs_avg35.*|V1_average|[lr]h\.EC_average|bert)$")
# What a value outside the map means, said with that error.
_HINT = {
    "tissues": "label_mode tissues groups aseg's 45 standard structures and aparc+aseg's cortical parcels; other "
               "values (lesions, another atlas) need a label map of their own",
    "aseg": "label_mode aseg has aseg's 45 standard structures as classes; aparc+aseg's cortical parcels "
            "(1000-2035) are grey matter under label_mode: tissues",
}


class FreeSurferDataModule(VolumeSegmentationDataModule):
    """A FreeSurfer ``SUBJECTS_DIR``: every subject folder with an ``mri/`` folder (templates such
    as ``fsaverage`` left out), its volumes ``mri/<modality>.mgz`` as the modalities (``norm``:
    skull-stripped and intensity-normalised, what aseg is computed from; ``orig``, ``nu``,
    ``T1``, ``brain``; ``T2`` and ``FLAIR`` from ``-T2pial``/``-FLAIRpial`` runs) and
    ``mri/<segmentation>.mgz`` as the label map. Volumes are conformed (256³ at 1 mm unless
    recon-all ran with ``-cm``; voxel axes L, I, A) and predictions are written back on that grid.

    Args:
        segmentation: the label map's name under ``mri/``: ``aseg`` (default), ``aparc+aseg``,
            ``aseg.auto``, ... (``.mgz`` added).
        label_mode: ``tissues``: background / CSF / GM / WM grouped from aseg's structures
            (``core.dataset_labels.FREESURFER_TISSUES``; ventral DC and vessels ignored);
            ``aseg``: each of aseg's 45 structures a class of its own.
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    def __init__(self, data_dir: str, modalities: tuple[str, ...] | list[str] = ("norm",),
                 segmentation: str = "aseg", label_mode: Literal["tissues", "aseg"] = "tissues",
                 **kwargs: Any) -> None:
        if label_mode not in _HINT:
            raise ValueError(f"label_mode must be 'tissues' or 'aseg', got {label_mode!r}")
        if not modalities:
            raise ValueError("FreeSurferDataModule needs the volumes to read (modalities: [norm], [T1, T2], ...)")
        self.available_modalities = tuple(modalities)  # any volume recon-all wrote under mri/
        self.segmentation = segmentation.removesuffix(".mgz")
        self.label_mode = label_mode
        super().__init__(data_dir, modalities=modalities, **kwargs)

    @property
    def label_space(self) -> LabelSpace:
        space = FREESURFER_TISSUES if self.label_mode == "tissues" else FREESURFER_ASEG
        return replace(space, unknown_values_hint=_HINT[self.label_mode])

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        ids = sorted((p.name for p in folder.iterdir()
                      if (p / "mri").is_dir() and not TEMPLATE_SUBJECTS.match(p.name)), key=natural_key)
        if not ids:
            raise NoSubjectsFound(f"{folder}: no FreeSurfer subjects found (expected <subject>/mri/"
                                  f"{self.modalities[0]}.mgz; point data_dir at the SUBJECTS_DIR)")
        subjects = []
        for subject_id in ids:
            mri = folder / subject_id / "mri"
            images = tuple(mri / f"{m}.mgz" for m in self.modalities)
            for path in images:
                require_file(path, f"subject {subject_id} lacks this volume; did recon-all finish?")
            label = mri / f"{self.segmentation}.mgz" if require_labels else None
            if label is not None:
                require_file(label, f"subject {subject_id} has no {self.segmentation}.mgz; did recon-all finish?")
            subjects.append(Subject(subject_id, images, label))
        return subjects
