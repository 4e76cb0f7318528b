"""iSeg-2017 (6-month infant brains): Analyze pairs ``subject-N-{T1,T2,label}.hdr/.img``."""

from __future__ import annotations

import re
from pathlib import Path

from core.dataset_labels import ISEG
from core.io import require_file
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

_FILE = re.compile(r"^subject-(\d+)-(\w+)\.hdr$")


def _analyze_pair(folder: Path, stem: str) -> Path:
    header = folder / f"{stem}.hdr"
    require_file(header)
    require_file(folder / f"{stem}.img", "Analyze needs both .hdr and .img")
    return header


class ISeg2017DataModule(VolumeSegmentationDataModule):
    """iSeg-2017: T1w + T2w, labels 0 / 10 (CSF) / 150 (GM) / 250 (WM) -> classes 0..3.

    Point ``data_dir`` at ``iSeg-2017-Training/``; ``predict_dir`` may point at
    ``iSeg-2017-Testing/`` (no labels). Subjects are ordered by number, not by name; ids are
    the file names' own strings, so ``subject-9`` and ``subject-09`` stay two subjects.
    """

    available_modalities = ("T1", "T2")
    label_space = ISEG

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        numbers = sorted({m.group(1) for p in folder.iterdir() if (m := _FILE.match(p.name))}, key=natural_key)
        if not numbers:
            raise NoSubjectsFound(f"{folder}: no iSeg subjects found (expected files like subject-1-T1.hdr/.img)")
        subjects = []
        for n in numbers:
            images = tuple(_analyze_pair(folder, f"subject-{n}-{m}") for m in self.modalities)
            label = None
            if require_labels:
                label = _analyze_pair(folder, f"subject-{n}-label")
            subjects.append(Subject(f"subject-{n}", images, label))
        return subjects


class ISeg2019DataModule(ISeg2017DataModule):
    """iSeg-2019 (multi-site infant brains): the iSeg-2017 naming, modalities and label values.

    Point ``data_dir`` at ``iSeg-2019-Training/`` (10 labelled subjects); ``predict_dir`` may
    point at ``iSeg-2019-Validation/`` (13 subjects, no labels).
    """
