"""Writing predictions: a subject's segmentation (and probabilities) on the scan's own grid,
marked in its header as ours, into a folder that replaces nothing it must not, with the
structures' volumes in ``volumes.csv`` (nnU-Net's ``export_prediction`` counterpart).

``predict.py``, ``train.py predict`` and :meth:`~core.segmenter.ScanSegmenter.segment_to_folder`
write through :class:`PredictionFolder`, checked before any work.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from core.geometry import resample_onto
from core.io import DataError, DataWarning, OutputError, nearest_existing, save_nifti_atomically, write_text_atomically
from core.labels import LabelSpace
from core.provenance import code_version
from core.volumes import Subject, natural_key


def to_scan_space(array: np.ndarray, affine: np.ndarray, original_affine: np.ndarray | None = None,
                  original_shape: Sequence[int] | None = None, order: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (spatial axes last) on the grid it was predicted on -> the scan's own grid
    and affine (exact for a reorientation; nearest neighbour or linear otherwise)."""
    affine = np.asarray(affine, dtype=np.float64)
    if original_affine is None:
        return array, affine
    original_affine = np.asarray(original_affine, dtype=np.float64)
    shape = tuple(int(s) for s in original_shape)
    return resample_onto(array, affine, shape, original_affine, order=order), original_affine


REPOSITORY = Path(__file__).resolve().parents[1]  # whose commit the outputs record
PREDICTION_MARK = b"brain-mri-segmentation prediction"  # NIfTI descrip of every image we write


def _marked(image: nib.Nifti1Image, note: str = "") -> nib.Nifti1Image:
    image.header["descrip"] = PREDICTION_MARK + (f"; {note}".encode()[: 79 - len(PREDICTION_MARK)] if note else b"")
    return image


STAMP_CODE = 6  # NIfTI header extension "comment": the model and settings an image was segmented with (JSON)
# What a run's record holds that changes no voxel of its segmentations.
_NOT_SHAPING = ("sw_batch_size", "probabilities")


def with_brain_masks(record: Mapping[str, Any], masked: bool) -> dict[str, Any]:
    """A run's ``record`` saying whether its scans were masked first (``brain_masks: true``): a
    setting that changes voxels, so a run continued without the masks segments them again."""
    return {**record, **({"brain_masks": True} if masked else {})}


def output_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What decides a run's segmentations: its model(s), by their bytes where they are files (the
    path stands for a model only when no digest is known), and the settings that change voxels
    (windows, overlap, mirroring, precision, resampling, brain masks). None for a run that records nothing."""
    def shaping(run: Mapping[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in run.items() if k not in _NOT_SHAPING and k not in _NOT_SETTINGS}
        if "checkpoint_sha256" in kept:
            kept.pop("checkpoint", None)
        return kept

    if not record:
        return None
    identity = shaping(record)
    if "ensemble" in identity:
        identity["ensemble"] = [shaping(member) for member in identity["ensemble"]]
    return json.loads(json.dumps(identity, sort_keys=True, default=str))  # as it reads back from a file


def _stamped(image: nib.Nifti1Image, identity: Mapping[str, Any] | None) -> nib.Nifti1Image:
    if identity is not None:
        text = json.dumps({"segmented_with": identity}, sort_keys=True)
        image.header.extensions.append(nib.nifti1.Nifti1Extension(STAMP_CODE, text.encode()))
    return image


def stamp_of(path: str | Path) -> dict[str, Any] | None:
    """The :func:`output_identity` a prediction image was written with; None for an image written
    before images were stamped (or not by us)."""
    try:
        extensions = nib.load(str(path)).header.extensions
    except Exception:  # not a NIfTI image, unreadable
        return None
    for extension in extensions:
        if extension.get_code() == STAMP_CODE:
            try:
                content = json.loads(extension.get_content())
            except ValueError:
                continue
            if isinstance(content, dict) and isinstance(content.get("segmented_with"), dict):
                return content["segmented_with"]
    return None


LOG_NAME = "predictions.jsonl"  # a line per prediction run, in every output folder
NOT_LOGGED = "not logged"  # what wrote a file that no logged run wrote
# A run's log entry beyond its settings.
_NOT_SETTINGS = ("written_by", "time", "subjects", "kept", "input_problems", "code")


def prediction_runs(folder: str | Path) -> list[dict[str, Any]]:
    """The runs logged in ``folder``'s ``predictions.jsonl``, oldest first (none without a log of ours)."""
    path = Path(folder) / LOG_NAME
    if not path.is_file() or not is_our_log(path):
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            runs.append(entry)
    return runs


def run_checkpoints(run: Mapping[str, Any]) -> str:
    """The checkpoint(s) of a run's record (an ensemble's joined by ``+``); empty when not known."""
    members = run.get("ensemble") or [run]
    return " + ".join(str(m["checkpoint"]) for m in members if m.get("checkpoint"))


def describe_run(run: Mapping[str, Any]) -> str:
    """A logged run in a line: its checkpoint(s) and settings."""
    settings = {k: v for k, v in run.items() if k not in _NOT_SETTINGS}
    shown = {k: v for k, v in settings.items() if k not in ("checkpoint", "checkpoint_sha256", "ensemble")}
    checkpoints = run_checkpoints(settings) or "an unnamed model"
    return f"{checkpoints} ({', '.join(f'{k} {v}' for k, v in shown.items())})" if shown else checkpoints


def _last_runs(folder: str | Path) -> dict[str, Mapping[str, Any]]:
    """Subject -> the logged run that wrote its files last."""
    last: dict[str, Mapping[str, Any]] = {}
    for run in prediction_runs(folder):
        for subject in run.get("subjects") or ():
            last[str(subject)] = run
    return last


def predictions_by_run(folder: str | Path, subjects: Sequence[str]) -> dict[str, list[str]]:
    """Which run (:func:`describe_run`) wrote each of ``subjects``' files last, as run -> subjects;
    :data:`NOT_LOGGED` for files no logged run wrote (older, or another tool's)."""
    last = _last_runs(folder)
    groups: dict[str, list[str]] = {}
    for subject in subjects:
        groups.setdefault(describe_run(last[subject]) if subject in last else NOT_LOGGED, []).append(subject)
    return groups


def logged_input_problems(folder: str | Path, subjects: Sequence[str]) -> dict[str, list[str]]:
    """What the input check said of each of ``subjects`` whose files the last run that wrote them
    logged so (a scan unlike the training scans: its score is not the model's on scans like its own)."""
    last = _last_runs(folder)
    return {subject: list(last[subject]["input_problems"][subject]) for subject in subjects
            if subject in last and subject in (last[subject].get("input_problems") or {})}


def is_our_log(path: Path) -> bool:
    """Whether ``path`` is a log of prediction runs written by this codebase (its first line says so)."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and first.get("written_by") == PREDICTION_MARK.decode()


def is_our_prediction(path: Path) -> bool:
    """Whether ``path`` was written by this codebase's prediction: a NIfTI image with the mark in
    its header, or a JSON sidecar whose ``Description`` starts with it."""
    if Path(path).suffix == ".json":
        try:
            description = json.loads(Path(path).read_text(encoding="utf-8")).get("Description")
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
            return False
        return isinstance(description, str) and description.startswith(PREDICTION_MARK.decode())
    try:
        return bytes(nib.load(str(path)).header["descrip"]).rstrip(b"\x00").startswith(PREDICTION_MARK)
    except Exception:  # not a NIfTI file, unreadable: certainly not ours
        return False


@dataclass
class Segmentation:
    """One subject's result on the scan's own grid: ``classes`` (class indices), its
    ``affine``, optional ``probabilities`` (C, D, H, W: one map per class or region)."""

    subject_id: str
    classes: np.ndarray
    affine: np.ndarray
    labels: LabelSpace
    probabilities: np.ndarray | None = None
    note: str = ""  # said in the header after the mark, e.g. "any-contrast model"
    problems: tuple[str, ...] = ()  # what the input check said of the scan (core.segmenter.input_problems)

    @classmethod
    def from_network_grid(cls, subject_id: str, classes: np.ndarray, labels: LabelSpace, affine: np.ndarray,
                          original_affine: np.ndarray | None = None, original_shape: Sequence[int] | None = None,
                          probabilities: np.ndarray | None = None, note: str = "", problems: Sequence[str] = ()
                          ) -> Segmentation:
        """Map a class map (and probabilities, linearly) from the network's grid back onto the scan's."""
        grid = {"affine": affine, "original_affine": original_affine, "original_shape": original_shape}
        scan_classes, scan_affine = to_scan_space(np.asarray(classes), **grid)
        maps = None if probabilities is None else to_scan_space(np.asarray(probabilities), **grid, order=1)[0]
        if maps is not None and not labels.region_based:
            maps[0][maps.sum(axis=0) == 0] = 1.0  # outside the predicted grid (a crop's box): background, surely
        return cls(subject_id, scan_classes, scan_affine, labels, maps, note, tuple(problems))

    def image(self, made_with: Mapping[str, Any] | None = None) -> nib.Nifti1Image:
        """The segmentation in the dataset's own label values (e.g. 10/150/250 for iSeg),
        marked as a prediction of this codebase in its header (``descrip``) and stamped with
        ``made_with`` (:func:`output_identity`: the model and settings) in a header extension."""
        image = nib.Nifti1Image(self.labels.decode(self.classes), self.affine)
        return _stamped(_marked(image, self.note), made_with)

    def probability_image(self, made_with: Mapping[str, Any] | None = None) -> nib.Nifti1Image:
        """The probability maps as one 4D float32 image (classes or regions on the 4th axis)."""
        if self.probabilities is None:
            raise ValueError(f"{self.subject_id}: probabilities were not kept (pass probabilities=True)")
        image = nib.Nifti1Image(np.moveaxis(self.probabilities, 0, -1).astype(np.float32), self.affine)
        return _stamped(_marked(image, self.note), made_with)

    def volumes_ml(self) -> dict[str, float]:
        """Millilitres per scored structure (class or region)."""
        return self.labels.volumes_ml(self.classes, self.affine)

    @classmethod
    def from_file(cls, subject_id: str, path: Path, labels: LabelSpace) -> Segmentation:
        """A segmentation written earlier (its classes and grid, for its volumes)."""
        image = nib.load(str(path))
        return cls(subject_id, labels.encode(np.asarray(image.dataobj), path), np.asarray(image.affine, float), labels)


@dataclass(frozen=True)
class OutputNames:
    """How a subject's outputs are named in the folder (``{subject}``: its id): ours by default;
    a DataModule whose dataset has a convention of its own says so (nnU-Net's ``<case>.nii.gz``)."""

    segmentation: str = "{subject}_seg.nii.gz"
    probabilities: str = "{subject}_probabilities.nii.gz"
    volumes: str = "volumes.csv"  # millilitres per structure and subject (``.tsv``: tab-separated)
    log: str = LOG_NAME  # a line per run: when, by which checkpoints and settings, which subjects

    def files(self, subject_id: str, probabilities: bool = False) -> list[str]:
        """The segmentation's name, then the probabilities' (when written)."""
        return [self.segmentation.format(subject=subject_id),
                *([self.probabilities.format(subject=subject_id)] if probabilities else [])]

    def links(self, sources: Sequence[Path], directory: Path) -> dict[str, str]:
        """How the folder's metadata refers to the datasets the inputs ``sources`` come from,
        by name (a BIDS derivative's ``DatasetLinks``): none here."""
        return {}

    def image_sidecars(self, subject_id: str, probabilities: bool = False) -> list[str]:
        """A metadata file per image of :meth:`files` (a BIDS derivative's JSON), in that order:
        none here."""
        return []

    def describe_image(self, sources: Sequence[Path], directory: Path, links: Mapping[str, str],
                       note: str = "", model: str = "") -> str:
        """The text of an image's sidecar in the folder ``directory``: what it is, which ``model``
        (checkpoints) made it and which input files (``sources``, through ``links``) it was
        computed from. Only called for names that have :meth:`image_sidecars`."""
        raise NotImplementedError(f"{type(self).__name__} names no image sidecars")

    def sidecars(self, labels: LabelSpace, links: Mapping[str, str] | None = None) -> dict[str, str]:
        """Files that describe the folder as a whole (a BIDS derivative's), by name: none here."""
        return {}


OUR_NAMES = OutputNames()
# <case>.nii.gz: nnU-Net's, and what the BraTS challenges take as submissions.
CASE_NAMES = OutputNames(segmentation="{subject}.nii.gz", probabilities="{subject}_probabilities.nii.gz")


def named_by_case(names: OutputNames, owner: str, option: str) -> OutputNames:
    """``<case>.nii.gz`` in place of a folder's ``names`` (predict.py's ``--case-names``, train.py
    predict's ``prediction_writer.case_names``); refused for names of another kind (a BIDS
    derivative's, named by their entities), which ``owner`` writes."""
    if names is CASE_NAMES:
        return names
    if type(names) is not OutputNames:
        raise DataError(f"{owner} writes a BIDS derivative, named by its entities: {option} is for folders of files")
    return CASE_NAMES


class PredictionFolder:
    """Writes ``<subject>_seg.nii.gz`` (and ``<subject>_probabilities.nii.gz``) per subject
    (or the names a dataset's convention gives, :class:`OutputNames`),
    each atomically, then merges the subjects' rows into ``volumes.csv`` (millilitres per
    structure) on :meth:`close`.

    Nothing is replaced that this folder did not write in this run: an existing file is an
    error, unless ``overwrite`` is set and the file is an earlier prediction of this codebase
    (marked in its header); an input file (``protect``) or any other file never is. The folder
    is created at the first write, so a run that fails before it leaves no empty folder.
    ``volumes.csv`` is updated under a lock: concurrent and repeated runs into one folder keep
    every subject's row (a subject segmented again gets its new row), in the subjects' natural
    order (``sub-2`` before ``sub-10``) whichever run ended first.

    Build it with :meth:`for_subjects`, which checks everything that can be known before any
    work (:meth:`check`); a write that fails all the same (a disk filled meanwhile) is an
    :class:`~core.io.OutputError` naming the file, and leaves no partial file.

    ``sources``: each subject's input files (its images and brain mask), for names whose images
    have sidecars saying what they were computed from (a BIDS derivative's ``Sources``). ``record``:
    how this run segments (checkpoints and settings), named in those sidecars too; :meth:`close`
    appends it, with the time, the subjects written and the code's commit, as one line to the
    folder's ``predictions.jsonl`` (nnU-Net keeps its prediction arguments beside its outputs too),
    so every file can be traced to the run that wrote it.
    """

    def __init__(self, directory: str | Path, probabilities: bool = False, overwrite: bool = False,
                 protect: Sequence[str | Path] = (), names: OutputNames = OUR_NAMES,
                 sources: Mapping[str, Sequence[Path]] | None = None,
                 record: Mapping[str, Any] | None = None, masked: bool = False) -> None:
        self.directory = Path(directory)
        self.masked = masked
        self.names = names
        self.probabilities = probabilities
        self.overwrite = overwrite
        self.protected = {Path(p).resolve() for p in protect}
        self.sources = {subject: [Path(p) for p in files] for subject, files in (sources or {}).items()}
        self.record = record or {}
        self.input_problems: dict[str, list[str]] = {}  # subject -> what its input check said, for the log
        self.finished: list[str] = []  # subjects an interrupted run wrote whole (for_subjects(continuing=True))
        self.redone: list[str] = []  # ... whole, but with another model or settings: segmented again
        self.kept: list[str] = []  # ... whose files this run kept (keep)
        self.links = names.links([p for files in self.sources.values() for p in files], self.directory)
        self.created: set[Path] = set()
        self.volumes: list[dict[str, Any]] = []
        self.volumes_labels: LabelSpace | None = None  # the label space of what was written (for sidecars)

    @classmethod
    def for_subjects(cls, directory: str | Path, subjects: Sequence[Subject], maps: int, probabilities: bool = False,
                     overwrite: bool = False, names: OutputNames = OUR_NAMES,
                     record: Mapping[str, Any] | None = None, continuing: bool = False) -> PredictionFolder:
        """The folder for segmenting ``subjects`` (their files protected) as ``record`` says
        (checkpoints, settings), checked before any work; ``maps``: probability maps per subject.
        ``continuing``: an interrupted run's folder (nnU-Net's ``--continue_prediction``): the
        subjects whose every output is there, ours and segmented with this ``record``'s model and
        settings are kept (:attr:`finished`); the others' outputs of ours are replaced (those
        segmented whole but otherwise: :attr:`redone`)."""
        folder = cls(directory, probabilities, overwrite or continuing,
                     protect=[f for s in subjects for f in s.files()], names=names,
                     sources={s.subject_id: list(dict.fromkeys([*s.images, *([s.brain_mask] if s.brain_mask else [])]))
                              for s in subjects}, record=record, masked=any(s.brain_mask for s in subjects))
        if continuing:
            whole = [s.subject_id for s in subjects if folder.is_finished(s.subject_id)]
            folder.finished = [s for s in whole if folder.segmented_alike(s)]
            folder.redone = [s for s in whole if s not in folder.finished]
        rest = [s for s in subjects if s.subject_id not in folder.finished]
        folder.check([s.subject_id for s in subjects], expected_bytes(rest, maps if probabilities else 0))
        return folder

    def is_finished(self, subject_id: str) -> bool:
        """Whether every output of ``subject_id`` is in the folder and a prediction of ours."""
        return all(path.is_file() and is_our_prediction(path) for path in self.outputs(subject_id))

    @property
    def record(self) -> dict[str, Any]:
        """How this run segments (:func:`with_brain_masks` where its scans were masked)."""
        return self._record

    @record.setter
    def record(self, value: Mapping[str, Any]) -> None:
        self._record = with_brain_masks(value, self.masked)

    def segmented_alike(self, subject_id: str) -> bool:
        """Whether ``subject_id``'s segmentation was made with this run's model and settings (as
        far as known: an image from before stamps, or a run that records nothing, counts as alike)."""
        identity, stamp = output_identity(self.record), stamp_of(self.outputs(subject_id)[0])
        return identity is None or stamp is None or stamp == identity

    def continuing_note(self, subjects: int) -> str:
        """What continuing an interrupted run decided, for the console."""
        note = (f"continuing in {self.directory}: {len(self.finished)} of {subjects} subjects were segmented whole by "
                "an earlier run and are kept")
        if self.redone:
            note += (f"; {len(self.redone)} segmented with another model or other settings are segmented again: "
                     f"{', '.join(self.redone)}")
        return note

    def keep(self, subject_id: str, labels: LabelSpace) -> None:
        """Count a finished subject's earlier segmentation in this run's ``volumes.csv`` rows,
        without writing it again (the log names it as kept, not as written by this run)."""
        segmentation = Segmentation.from_file(subject_id, self.outputs(subject_id)[0], labels)
        self.volumes.append({"subject": subject_id, **segmentation.volumes_ml()})
        self.volumes_labels = labels
        self.kept.append(subject_id)

    def outputs(self, subject_id: str) -> list[Path]:
        """The files :meth:`write` makes for ``subject_id``: its images, then their sidecars."""
        return [self.directory / name for name in (*self.names.files(subject_id, self.probabilities),
                                                   *self.names.image_sidecars(subject_id, self.probabilities))]

    def check(self, subject_ids: Sequence[str], expected_bytes: int = 0) -> None:
        """Refuse, before any work, outputs that would replace a file they must not (see the
        class) or each other (two subjects of one id), and a folder that cannot take them: a
        file in its place, no write permission, less free space than ``expected_bytes``."""
        repeated = sorted(s for s, n in Counter(subject_ids).items() if n > 1)
        if repeated:
            raise DataError(f"{self.directory}: subject ids {repeated} occur twice; their outputs would collide")
        for subject_id in subject_ids:
            if subject_id in self.finished:
                continue
            for path in self.outputs(subject_id):
                self._check_replaceable(path)
        log = self.directory / self.names.log
        if log.exists() and not is_our_log(log):
            raise DataError(f"{log}: exists and is not this codebase's log of prediction runs; refusing to add to it "
                            "(choose another output folder)")
        self._check_room(expected_bytes)

    def _check_room(self, expected_bytes: int) -> None:
        existing = nearest_existing(self.directory)  # the folder is made at the first write
        if not existing.is_dir():
            raise OutputError(f"{existing}: is a file, not a folder; choose another output folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{existing}: not writable (permission denied or a read-only file system); choose "
                              "another output folder")
        free = shutil.disk_usage(existing).free
        if free < expected_bytes:
            raise OutputError(f"{self.directory}: {_size(free)} free, the predictions need about "
                              f"{_size(expected_bytes)}; free space or choose another output folder")

    def _check_replaceable(self, path: Path) -> None:
        if path.resolve() in self.protected:
            raise DataError(f"{path}: is an input file; refusing to write a prediction over it (choose another output "
                            "folder)")
        if not path.exists() or path in self.created:
            return
        if not is_our_prediction(path):
            raise DataError(f"{path}: exists and was not written by a prediction of this codebase; refusing to "
                            "replace it (choose another output folder)")
        if not self.overwrite:
            raise DataError(f"{path}: exists (an earlier prediction); pass --overwrite to replace it (or, after an "
                            "interrupted run, --continue-prediction to keep the subjects it wrote whole)")

    def write(self, segmentation: Segmentation) -> Path:
        subject = segmentation.subject_id
        paths = self.outputs(subject)
        for path in paths:
            self._check_replaceable(path)
        identity = output_identity(self.record)
        save_nifti_atomically(segmentation.image(identity), paths[0])
        if self.probabilities:
            save_nifti_atomically(segmentation.probability_image(identity), paths[1])
        images = len(self.names.files(subject, self.probabilities))
        if len(paths) > images:  # one sidecar per image: the same sources
            text = self.names.describe_image(self.sources.get(subject, ()), self.directory, self.links,
                                             segmentation.note, run_checkpoints(self.record))
            for path in paths[images:]:
                write_text_atomically(path, text)
        self.created.update(paths)
        if segmentation.problems:
            self.input_problems[subject] = list(segmentation.problems)
        self.volumes.append({"subject": subject, **segmentation.volumes_ml()})
        self.volumes_labels = segmentation.labels
        return paths[0]

    def close(self) -> Path | None:
        """Merge this run's rows into ``volumes.csv`` and write the folder's sidecars that are
        not there yet (an existing one is kept); None when nothing was segmented."""
        if not self.volumes:
            return None
        path = self.directory / self.names.volumes
        delimiter = "\t" if path.suffix == ".tsv" else ","
        with locked(self.directory):
            for name, text in self.names.sidecars(self.volumes_labels, self.links).items():
                if not (self.directory / name).exists():
                    write_text_atomically(self.directory / name, text)
            rows: dict[str, dict[str, Any]] = {}
            if path.exists():
                with open(path, newline="", encoding="utf-8") as handle:
                    rows = {row["subject"]: row for row in csv.DictReader(handle, delimiter=delimiter)}
            rows.update({str(row["subject"]): row for row in self.volumes})
            rows = dict(sorted(rows.items(), key=lambda item: natural_key(item[0])))  # whatever order runs ended in
            columns = list(dict.fromkeys(k for row in rows.values() for k in row))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="",
                                    delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows.values())
            written = write_text_atomically(path, buffer.getvalue())
            self._log_run()
            return written

    def _log_run(self) -> None:
        """Append this run to the folder's log (under the caller's lock; an earlier log of ours kept)."""
        log = self.directory / self.names.log
        if log.exists() and not is_our_log(log):  # it appeared during the run: left as it is
            warnings.warn(f"{log}: is not this codebase's log of prediction runs (it appeared during the run); the "
                          "predictions are written, this run is not logged", DataWarning, stacklevel=3)
            return
        entry = {"written_by": PREDICTION_MARK.decode(), "time": datetime.now(UTC).isoformat(timespec="seconds"),
                 **self.record,
                 "subjects": [str(row["subject"]) for row in self.volumes if row["subject"] not in self.kept],
                 **({"kept": self.kept} if self.kept else {}),
                 **({"input_problems": self.input_problems} if self.input_problems else {}),
                 "code": code_version(REPOSITORY)}
        before = log.read_text(encoding="utf-8") if log.exists() else ""
        write_text_atomically(log, before + json.dumps(entry, default=str) + "\n")


# What gzip leaves of an output, per voxel: label maps shrink tens of times, float32
# probabilities about twofold. Estimates for the free-space check, on the generous side.
LABEL_BYTES_PER_VOXEL = 0.1
PROBABILITY_BYTES_PER_VOXEL = 2.0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def expected_bytes(subjects: Sequence[Subject], maps: int = 0) -> int:
    """About how many bytes the predictions of ``subjects`` take on disk (each on its first
    image's grid; ``maps`` probability maps each, if written), from the image headers alone."""
    voxels = 0
    for subject in subjects:
        try:
            voxels += int(np.prod(nib.load(str(subject.images[0])).shape[:3]))
        except Exception:  # unreadable here: the reader names the file when the subject's turn comes
            continue
    return int(voxels * (LABEL_BYTES_PER_VOXEL + maps * PROBABILITY_BYTES_PER_VOXEL))


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` itself for the block (one process at a time; no lock
    file left behind, and it holds across the atomic renames of the files inside)."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


