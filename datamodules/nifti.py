"""Your own NIfTI data: a folder of per-modality 3D files named by a pattern, or a CSV."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.file_patterns import matches, pattern_fields, pattern_regex
from core.io import IMAGE_SUFFIXES, DataError, require_file, unreadable
from core.labels import LabelSpace
from core.volumes import Subject
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule


class NiftiDataModule(VolumeSegmentationDataModule):
    """Per-modality 3D NIfTI files, found either by file-name pattern in a folder or listed in
    a CSV, with a label map given in the config.

    Folder: ``data_dir`` holds files named by ``image_pattern`` and ``label_pattern``, in which
    ``{subject}`` stands for the subject id and ``{modality}`` for a modality name: the
    default ``{subject}/{modality}.nii.gz`` + ``{subject}/label.nii.gz`` reads
    ``sub-01/T1.nii.gz, sub-01/FLAIR.nii.gz, sub-01/label.nii.gz``; ``{subject}_{modality}.nii.gz``
    reads a flat folder. Any other placeholder is one more folder or name part, e.g.
    ``{site}/{subject}/{modality}.nii.gz`` for a multi-site layout (``siteA/patient01/T1.nii.gz``);
    the subject id then joins the parts: ``siteA_patient01``. CSV: ``data_dir`` is a ``.csv``
    file with a ``subject`` column, one column per modality and a ``label`` column (and a
    ``mask`` column for brain masks); relative paths are relative to the CSV.

    Args:
        modalities: the modality names (the CSV's columns / the pattern's ``{modality}``).
        labels: label value -> class name, background first, e.g. ``{0: background, 1: lesion}``.
        ignore_labels: label values counted in no loss and no metric.
        regions: optional ``name -> label values`` for region-based (sigmoid) training.
        mask_pattern: scans that are not skull-stripped: each subject's brain mask (SynthStrip's,
            HD-BET's, BET's; non-zero inside), ``{subject}/brain_mask.nii.gz``, with the
            placeholders of ``image_pattern``; every image is set to 0 outside it before
            normalisation, as a skull-stripped scan's background is (a CSV: its ``mask`` column).
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    def __init__(self, data_dir: str, modalities: Sequence[str], labels: Mapping[int, str],
                 ignore_labels: Sequence[int] = (), regions: Mapping[str, Sequence[int]] | None = None,
                 image_pattern: str = "{subject}/{modality}.nii.gz", label_pattern: str = "{subject}/label.nii.gz",
                 mask_pattern: str | None = None, **kwargs: Any) -> None:
        if not modalities:
            raise ValueError("NiftiDataModule needs the modality names (modalities: [T1, FLAIR, ...])")
        if "{modality}" not in image_pattern:
            raise ValueError(f"image_pattern {image_pattern!r} must contain {{modality}}")
        for name, pattern in (("label_pattern", label_pattern), ("mask_pattern", mask_pattern)):
            if pattern is not None and set(pattern_fields(pattern)) != set(pattern_fields(image_pattern)):
                raise ValueError(f"{name} {pattern!r} must use the placeholders of image_pattern "
                                 f"{image_pattern!r} ({', '.join(pattern_fields(image_pattern))}) and no other")
        self.available_modalities = tuple(modalities)
        self.image_pattern = image_pattern
        self.label_pattern = label_pattern
        self.mask_pattern = mask_pattern
        label_space = LabelSpace.from_values(labels, ignore=ignore_labels)
        self._label_space = label_space.with_regions(regions) if regions else label_space
        super().__init__(data_dir, modalities=modalities, **kwargs)

    @property
    def label_space(self) -> LabelSpace:
        return self._label_space

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        if folder.suffix.lower() == ".csv":
            return self._from_csv(folder, require_labels)
        if not folder.is_dir():
            raise DataError(f"{folder}: neither a folder nor a .csv file")
        found = matches(folder, self.image_pattern, self.modalities[0])
        names = pattern_fields(self.image_pattern)
        if not found:
            example = self.image_pattern.format(**{n: f"<{n}>" for n in names}, modality=self.modalities[0])
            raise NoSubjectsFound(f"{folder}: no subjects found (expected files like {example})"
                                  + self._pattern_hint(folder))
        subjects = []
        for subject_id, fields in found.items():
            images = tuple(folder / self.image_pattern.format(**fields, modality=m) for m in self.modalities)
            for path in images:
                require_file(path, f"subject {subject_id} lacks this modality")
            label = folder / self.label_pattern.format(**fields) if require_labels else None
            if label is not None:
                require_file(label, f"subject {subject_id} has no label map")
            mask = folder / self.mask_pattern.format(**fields) if self.mask_pattern else None
            if mask is not None:
                require_file(mask, f"subject {subject_id} has no brain mask (mask_pattern {self.mask_pattern!r})")
            subjects.append(Subject(subject_id, images, label, brain_mask=mask))
        return subjects

    def _pattern_hint(self, folder: Path) -> str:
        """What a folder the patterns find nothing in holds instead: the patterns with the file
        ending its images have (``.nii`` where ``.nii.gz`` was asked: nibabel reads either), or a
        few of its image files, so that a name that differs (``T1w`` for ``T1``) shows."""
        images = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        longest_first = sorted(IMAGE_SUFFIXES, key=len, reverse=True)  # .nii.gz before .nii
        asked = next((s for s in longest_first if self.image_pattern.lower().endswith(s)), None)
        for suffix in longest_first if asked else ():
            image_pattern = self.image_pattern[: -len(asked)] + suffix
            if suffix != asked and any(pattern_regex(image_pattern, self.modalities[0]).match(i) for i in images):
                label_pattern = (self.label_pattern[: -len(asked)] + suffix
                                 if self.label_pattern.lower().endswith(asked) else self.label_pattern)
                return (f"; its images end in {suffix}: --data.init_args.image_pattern '{image_pattern}' "
                        f"--data.init_args.label_pattern '{label_pattern}'")
        if not images:
            return "; it holds no image files"
        return f"; it holds {len(images)} image files, e.g. {', '.join(images[:3])}"

    def _from_csv(self, path: Path, require_labels: bool) -> list[Subject]:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        columns = ["subject", *self.modalities, *(["label"] if require_labels else [])]
        header = list(rows[0]) if rows else []
        missing = [c for c in columns if c not in header]
        if not rows or missing:
            raise DataError(f"{path}: needs columns {columns}; " + (f"missing {missing}" if rows else "no rows"))
        root = path.parent
        subjects = []
        for line, row in enumerate(rows, start=2):
            images = tuple(root / row[m] for m in self.modalities)
            label = root / row["label"] if require_labels else None
            mask = root / row["mask"] if row.get("mask") else None  # an empty cell: a scan already stripped
            for file in [*images, *([label] if label else []), *([mask] if mask else [])]:
                if (reason := unreadable(file)) is not None:
                    raise DataError(f"{path}, line {line}: {file}: {reason}")
            subjects.append(Subject(row["subject"], images, label, brain_mask=mask))
        counts = Counter(s.subject_id for s in subjects)
        duplicated = sorted(name for name, count in counts.items() if count > 1)
        if duplicated:
            raise DataError(f"{path}: subjects {duplicated} are listed more than once")
        return subjects
