"""BIDS datasets, read with pybids: images by suffix and entities, label maps from a derivatives
pipeline's ``*_dseg`` files and its ``dseg.tsv``, brain masks (for scans that are not skull-
stripped) from another's ``*_desc-brain_mask`` files, predictions written as a BIDS derivative.

A training unit is one session of one participant (``sub-01_ses-1``; ``sub-01`` without
sessions); splits keep a participant's sessions together.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from core.bids import (
    BIDS_NAMES,
    BRAIN_MASK_ENTITIES,
    ENTITIES,
    derivative_files,
    dseg_tables,
    read_dseg_tsv,
    unit_id,
    unit_parts,
)
from core.io import DataError, DataWarning
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

FILE_KEYS = {name: key for key, name in ENTITIES.items()}
_MODALITY = re.compile(r"^((?:[a-z]+-[a-zA-Z0-9]+_)*)([a-zA-Z0-9]+)$")
IMAGE_EXTENSIONS = [".nii.gz", ".nii"]


def parse_modality(spec: str) -> tuple[str, dict[str, str]]:
    """``"acq-mprage_T1w"`` -> ``("T1w", {"acquisition": "mprage"})``: a BIDS suffix, optionally
    after entities, names one modality."""
    match = _MODALITY.match(spec)
    if not match:
        raise ValueError(f"modality {spec!r}: expected a BIDS suffix (T1w, T2w, FLAIR), optionally after entities "
                         "(acq-mprage_T1w, ce-gadolinium_T1w)")
    entities = {}
    for pair in filter(None, match[1].split("_")):
        key, value = pair.split("-", 1)
        if key not in ENTITIES:
            raise ValueError(f"modality {spec!r}: unknown entity {key!r}; known: {sorted(ENTITIES)}")
        entities[ENTITIES[key]] = int(value) if key in ("run", "echo") else value
    return match[2], entities


def _layout(root: Path, derivative: bool = False) -> Any:
    """pybids' index of ``root`` (imported here: only BIDS datasets need it), file names and
    entities only: the JSON sidecars' metadata is never used here, and reading it took 60 % of
    the indexing of a 6,000-file tree."""
    try:
        from bids import BIDSLayout, BIDSLayoutIndexer
    except ImportError as error:
        raise DataError(f"{root}: reading a BIDS dataset needs pybids: pip install pybids") from error
    try:
        return BIDSLayout(str(root), validate=False, is_derivative=derivative,
                          indexer=BIDSLayoutIndexer(index_metadata=False))
    except Exception as error:  # pybids raises ValueError/BIDSValidationError for a missing description
        raise NoSubjectsFound(f"{root}: not a BIDS {'derivatives ' if derivative else ''}dataset "
                              f"({str(error).splitlines()[0]})") from error


_UNIT_FOLDER = re.compile(r"^sub-([a-zA-Z0-9]+)(?:/ses-([a-zA-Z0-9]+))?(?:/|$)")


def _units(layout: Any) -> dict[str, list[str | None]]:
    """Each participant's sessions (``[None]`` without sessions), from the indexed files' folders:
    one query for the dataset (pybids' ``get_subjects`` and ``get_sessions`` per participant took
    minutes on a 1,000-session tree)."""
    sessions: dict[str, set[str]] = {}
    for name in layout.get(return_type="filename"):
        match = _UNIT_FOLDER.match(Path(os.path.relpath(name, layout.root)).as_posix())
        if match:
            sessions.setdefault(match[1], set()).update([match[2]] if match[2] else [])
    return {subject: sorted(found, key=natural_key) or [None]
            for subject, found in sorted(sessions.items(), key=lambda item: natural_key(item[0]))}


def _by_session(files: list[Any]) -> dict[tuple[str, str | None], list[Any]]:
    """pybids files grouped by (participant, session or None)."""
    groups: dict[tuple[str, str | None], list[Any]] = {}
    for file in files:
        groups.setdefault((str(file.entities["subject"]), file.entities.get("session")), []).append(file)
    return groups


class BIDSDataModule(VolumeSegmentationDataModule):
    """A BIDS dataset: each session of each participant is one subject (``sub-01_ses-1``), its
    images picked by suffix and entities, its label map a ``*_dseg.nii.gz`` of a derivatives
    pipeline whose ``dseg.tsv`` gives the label space.

    Args:
        data_dir: the BIDS dataset's root (``dataset_description.json``, ``sub-*/``).
        modalities: BIDS suffixes, optionally after entities: ``[T1w, T2w]``,
            ``[acq-mprage_T1w, FLAIR]``, ``[ce-gadolinium_T1w]``.
        labels_dir: the derivatives pipeline with the label maps, relative to ``data_dir``
            (``derivatives/manual``) or absolute; ``null`` for prediction only.
        label_entities: entities that pick the label map among several (``{desc: tissue}``);
            ``null`` for one that must be absent (fMRIPrep's tissue map among its ``desc-aseg``
            and ``space-MNI...`` maps: ``{desc: null, space: null}``).
        image_entities: entities every image must have besides its modality's (``null``: must
            be absent): a derivative read as input, fMRIPrep's native-space preprocessed scans
            among their ``space-MNI...`` copies, is ``modalities: [desc-preproc_T1w]`` with
            ``{space: null}``.
        labels: the label values' names, ``{1: GM, 2: WM, 3: CSF}``, for a pipeline that ships
            no table; else its table gives them: ``<entities>_dseg.tsv`` for the label entities
            (fMRIPrep's ``desc-aseg_dseg.tsv``), or ``dseg.tsv``.
        regions: optional ``name -> label values`` for region-based (sigmoid) training.
        require_all: a session lacking a modality (or its label map) is an error instead of
            skipped with a one-line warning.
        run: which of several runs of a modality to use, ``last`` (a repeat after a failed scan)
            or ``first``; said in a warning whenever it decides.
        masks_dir: a derivatives pipeline with a brain mask per session (``*_desc-brain_mask``:
            fMRIPrep's, or SynthStrip's / HD-BET's saved under BIDS names), relative to
            ``data_dir`` (``derivatives/fmriprep``) or absolute: every image is set to 0 outside
            it before normalisation, as a skull-stripped scan's background is. A mask without a
            session (``sub-01_desc-brain_mask``) serves a participant with one session only; a
            session without one is skipped with a one-line reason (an error with ``require_all``).
        mask_entities: the entities that pick the mask (file-name keys; ``null``: absent);
            default ``{desc: brain, space: null}``, the native-space mask among fMRIPrep's
            ``space-MNI...`` copies.
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    output_names = BIDS_NAMES
    hints_subfolders = False  # pybids indexes a folder whole: a subfolder each would be slow

    def __init__(self, data_dir: str, modalities: Sequence[str] = ("T1w",), labels_dir: str | None = None,
                 label_entities: Mapping[str, str | None] | None = None,
                 regions: Mapping[str, Sequence[int]] | None = None, require_all: bool = False,
                 run: Literal["first", "last"] = "last", labels: Mapping[int, str] | None = None,
                 image_entities: Mapping[str, str | None] | None = None, masks_dir: str | None = None,
                 mask_entities: Mapping[str, str | None] | None = None, **kwargs: Any) -> None:
        for spec in modalities:
            parse_modality(spec)
        if run not in ("first", "last"):
            raise ValueError(f"run must be 'first' or 'last', got {run!r}")
        self.available_modalities = tuple(modalities)
        self.labels_dir = None if labels_dir is None else Path(data_dir) / labels_dir
        self.label_entities = {ENTITIES.get(k, k): v for k, v in (label_entities or {}).items()}  # pybids' names
        self._labels = {int(value): str(name) for value, name in labels.items()} if labels else None
        self.image_entities = {ENTITIES.get(k, k): v for k, v in (image_entities or {}).items()}
        self.require_all, self.run = require_all, run
        self.masks_dir = None if masks_dir is None else Path(data_dir) / masks_dir
        self.mask_entities = dict(BRAIN_MASK_ENTITIES if mask_entities is None else mask_entities)
        self._regions = dict(regions) if regions else None
        self._label_space: LabelSpace | None = None
        super().__init__(data_dir, modalities=modalities, **kwargs)
        if self.generates_images:  # a model of any contrast: its segmentations named by the contrast read
            self.output_names = BIDS_NAMES.of_contrast(self.modalities[0])

    @property
    def label_space(self) -> LabelSpace:
        if self._label_space is None:
            values = ({0: "background", **self._labels} if self._labels is not None
                      else read_dseg_tsv(self._label_table()))
            space = LabelSpace.from_values(dict(sorted(values.items())))
            self._label_space = space.with_regions(self._regions) if self._regions else space
        return self._label_space

    def _label_table(self) -> Path:
        """The pipeline's table for the chosen label maps (BIDS inheritance: the most specific)."""
        in_file_names = {FILE_KEYS.get(k, k): v for k, v in self.label_entities.items()}
        candidates = dseg_tables(self._required_labels_dir(), in_file_names)
        for table in candidates:
            if table.is_file():
                return table
        nor = f", nor {', '.join(c.name for c in candidates[:-1])}" if len(candidates) > 1 else ""
        raise DataError(f"{candidates[-1]}: file not found{nor} (the table of the *_dseg label values: columns "
                        "index and name; for a pipeline that ships none, give their names as labels: "
                        "{1: GM, 2: WM, 3: CSF})")

    def _required_labels_dir(self) -> Path:
        if self.labels_dir is None:
            raise DataError(f"{self.data_dir}: no labels_dir given (the derivatives pipeline with *_dseg label "
                            "maps, e.g. derivatives/manual); it is needed to train and to score")
        return self.labels_dir

    def split_unit(self, subject_id: str) -> str:
        return f"sub-{unit_parts(subject_id)[0]}"

    def subject_name(self, name: str) -> str:
        return name if name.startswith("sub-") else f"sub-{name}"

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        layout = _layout(folder)
        images = _by_session(layout.get(datatype="anat", extension=IMAGE_EXTENSIONS, return_type="object"))
        labels = None
        if require_labels:
            labels = _by_session(_layout(self._required_labels_dir(), derivative=True).get(
                suffix="dseg", datatype="anat", extension=IMAGE_EXTENSIONS, return_type="object",
                **self.label_entities))
        masks = self._brain_masks()
        subjects, skipped = [], []
        for subject, sessions in _units(layout).items():
            for session in sessions:
                name = unit_id(subject, session)
                found = images.get((subject, session), [])
                chosen = [self._one(self._matching(found, spec), name, spec) for spec in self.modalities]
                missing = [spec for spec, path in zip(self.modalities, chosen, strict=True) if path is None]
                label = self._one(labels.get((subject, session), []), name, "dseg") if labels is not None else None
                mask = None if masks is None else self._mask_of(masks, subject, session, len(sessions))
                if missing or (labels is not None and label is None) or (masks is not None and mask is None):
                    what = (f"no {', '.join(missing)} image" if missing
                            else f"no *_dseg label map in {self.labels_dir}" if labels is not None and label is None
                            else self._no_mask(subject, masks))
                    skipped.append(f"{name}: {what}")
                    continue
                subjects.append(Subject(name, tuple(chosen), label, brain_mask=mask))
        if skipped and self.require_all:
            raise DataError(f"{folder}: {skipped[0]} (require_all is set; {len(skipped)} sessions lack a file)")
        for reason in skipped:
            warnings.warn(f"{folder}: skipping {reason}", DataWarning, stacklevel=2)
        if not subjects:
            raise DataError(f"{folder}: no session has every modality {list(self.modalities)}"
                            + (" and a label map" if labels is not None else "")
                            + (" and a brain mask" if masks is not None else ""))
        return subjects

    def _brain_masks(self) -> dict[str, Path] | None:
        """``sub-01_ses-1`` (``sub-01``: a participant-level mask) -> its mask in ``masks_dir``."""
        if self.masks_dir is None:
            return None
        if not self.masks_dir.is_dir():
            raise DataError(f"{self.masks_dir}: folder not found (masks_dir: the derivatives pipeline with each "
                            f"session's brain mask, {self._mask_pattern()})")
        return derivative_files(self.masks_dir, self.mask_entities, suffix="mask")

    @staticmethod
    def _mask_of(masks: Mapping[str, Path], subject: str, session: str | None, sessions: int) -> Path | None:
        """The session's own mask, else the participant's when it has no other session (a mask
        made for a template of several sessions fits none of them: the head moves between them)."""
        own = masks.get(unit_id(subject, session))
        return own if own is not None or sessions > 1 else masks.get(unit_id(subject, None))

    def _no_mask(self, subject: str, masks: Mapping[str, Path]) -> str:
        found = f"no brain mask ({self._mask_pattern()}) in {self.masks_dir}"
        if (shared := masks.get(unit_id(subject, None))) is not None:
            found += (f": only {shared.name}, made for all of sub-{subject}'s sessions, which lie apart (the head "
                      "moves between them); give each session a mask of its own")
        return found

    def _mask_pattern(self) -> str:
        wanted = "".join(f"_{key}-{value}" for key, value in self.mask_entities.items() if value is not None)
        return f"sub-*{wanted}_mask.nii.gz"

    def _matching(self, files: list[Any], spec: str) -> list[Any]:
        """The session's images of ``spec``: its suffix, and its entities and ``image_entities``
        (the spec's win; ``None``: the entity absent)."""
        suffix, entities = parse_modality(spec)
        wanted = {**self.image_entities, **entities}
        return [f for f in files if f.entities.get("suffix") == suffix
                and all(f.entities.get(key) == value for key, value in wanted.items())]

    def _one(self, files: list[Any], name: str, what: str) -> Path | None:
        if not files:
            return None
        by_run = sorted(files, key=lambda f: (int(f.entities.get("run", 0)), f.path))
        others = {tuple(sorted((k, str(v)) for k, v in f.entities.items() if k not in ("run", "extension")))
                  for f in files}
        if len(others) > 1:  # not runs of one acquisition: the user must say which
            names = sorted(Path(f.path).name for f in files)
            how = ("label_entities: {desc: aseg}, or {desc: null, space: null} for the map without those entities"
                   if what == "dseg" else f"acq-<label>_{what}, or image_entities: {{space: null}} for the images "
                   "without one")
            raise DataError(f"{Path(files[0].path).parent}: {name} has several {what} images {names}; name the one "
                            f"to use with entities ({how})")
        if len(files) > 1:
            chosen = by_run[-1] if self.run == "last" else by_run[0]
            warnings.warn(f"{name}: {len(files)} runs of {what}; using {Path(chosen.path).name} (run: {self.run})",
                          DataWarning, stacklevel=3)
            return Path(chosen.path)
        return Path(files[0].path)


