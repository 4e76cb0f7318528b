"""Score a folder of predicted segmentations against the ground truth, challenge-style.

    python evaluate.py --pred runs/x/predictions --gt /data/MICCAI_BraTS2020_TrainingData --dataset brats

Predictions are paired with the ground truth by subject id, whatever their naming:
``<subject>_seg.nii.gz`` (what ``predict.py`` writes), ``<subject>.nii.gz`` (nnU-Net's) or the
ground truth's own file names. ``--gt`` is either the dataset folder as the challenge ships it
(subjects found by the dataset's DataModule) or a flat folder of
``<subject>[_seg|_label|...].nii.gz`` files; either side may be a BIDS derivative folder
(``sub-*/[ses-*/]anat/*_dseg.nii.gz``, paired by subject and session; ``--dataset dseg`` scores
the structures of the ground truth's ``dseg.tsv``); ``--dataset nnunet`` scores the labels (or
regions) of an nnU-Net dataset's ``dataset.json``, found in ``--gt`` (the dataset folder: its
``labelsTr``) or its parent (``--gt .../labelsTs``). The predicted subjects are scored and the others
listed (``--require-all`` makes a subject on one side only an error). Writes
``scores.csv`` (one row per subject and structure), ``summary.csv`` (mean, std and count per
structure and metric; NaN values left out) and ``summary.md`` (also printed; below the table,
the logged prediction runs, checkpoints and settings, that wrote the scored files, with a warning
when there are several: their scores are pooled). Metric
definitions and the empty-mask conventions: :mod:`core.metrics`; the
structures each ``--dataset`` scores: :mod:`core.dataset_labels`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from core.bids import derivative_files, dseg_tables, is_derivative, read_dseg_tsv
from core.dataset_labels import BRATS_CONVENTIONS, DATASET_LABELS
from core.export import NOT_LOGGED, logged_input_problems, predictions_by_run
from core.file_patterns import files_by_pattern
from core.geometry import grid_offset, reorient_like, voxel_spacing
from core.io import (
    IMAGE_SUFFIXES,
    BadInputs,
    DataError,
    DataWarning,
    check_size,
    earlier_report,
    is_itk_file,
    load_volume,
    one_line_warnings,
    without_singleton_axes,
    write_text_atomically,
)
from core.labels import LabelSpace, present_values, remapped, value_mask, whole_label_values
from core.lesions import LESION_COLUMNS, LESION_RULES, LesionRule, lesion_table, score_columns, subject_rows
from core.lesions import lesion_rule as rule_of
from core.metrics import (
    COLUMNS,
    SCORE_FILES,
    SCORING_RECORD,
    csv_text,
    markdown_table,
    summarise,
)
from core.nnunet import nnunet_label_space, read_nnunet_description
from core.postprocessing import LargestComponentGains
from core.volumes import natural_key

PROBABILITIES = "_probabilities"  # the probability maps predict.py may write beside the segmentations
_SUFFIX = r"(?:[_-](?:seg|segm|label|labels|segmentation|gt|mask))?"


def _label_file_pattern(suffixes: Sequence[str]) -> re.Pattern[str]:
    """A label file's name in one of the image formats ``suffixes`` (:data:`core.io.IMAGE_SUFFIXES`),
    its subject the stem without a ``_seg``-like suffix."""
    return re.compile(rf"^(?P<stem>.+?){_SUFFIX}(?:{'|'.join(re.escape(s) for s in suffixes)})$", re.IGNORECASE)


# A flat ground-truth folder holds label maps of any format but Analyze's; a challenge folder (iSeg's
# Analyze files, with the images beside the labels) is read by its DataModule instead.
FLAT_TRUTH = _label_file_pattern([s for s in IMAGE_SUFFIXES if s not in (".hdr", ".img")])
# Predictions may also be Analyze files (named like iSeg's labels), by their header.
LABEL_FILE = _label_file_pattern([s for s in IMAGE_SUFFIXES if s != ".img"])
FREESURFER_DATASETS = ("freesurfer_tissues", "freesurfer_aseg")  # a SUBJECTS_DIR scored by tissue or by structure
# The challenge layouts evaluate.py can read ground truth from (by their DataModule).
LAYOUTS = {"iseg": "ISeg2017DataModule", "mrbrains18": "MRBrainS18DataModule",
           "mrbrains18_thesis": "MRBrainS18DataModule", **dict.fromkeys(BRATS_CONVENTIONS, "BraTSDataModule"),
           "nnunet": "NnUNetDataModule",  # an nnU-Net dataset folder: its labelsTr
           **dict.fromkeys(FREESURFER_DATASETS, "FreeSurferDataModule")}  # a SUBJECTS_DIR
# What a layout is read with to find its ground truth alone: a SUBJECTS_DIR's label maps need no norm.mgz.
LAYOUT_ARGS = dict.fromkeys(FREESURFER_DATASETS, {"modalities": ["aseg"]})
# What --dataset takes: a challenge's label space, --labels, or the ground truth's own description.
DATASETS = sorted([*DATASET_LABELS, "labels", "dseg", "nnunet"])


class EvaluationError(ValueError):
    """Inputs that cannot be scored (missing subjects, grids that disagree)."""


def parse_labels(labels: str | Mapping[int, str]) -> LabelSpace:
    """``"0:background,1:lesion"`` (or a dict) -> a label space whose structures are the
    non-background values (background 0 is added when not named)."""
    labels = label_names(labels)
    foreground = {int(v): str(n) for v, n in labels.items() if int(v) != 0 and str(n).lower() != "background"}
    if not foreground:
        raise EvaluationError("--labels names no non-background value")
    background = [int(v) for v in labels if int(v) not in foreground] or [0]
    return LabelSpace.from_groups({"background": background, **{n: [v] for v, n in foreground.items()}})


def nnunet_dataset_folder(gt_dir: Path) -> Path:
    """The nnU-Net dataset folder whose ``dataset.json`` describes ``gt_dir``'s labels: ``gt_dir``
    itself, or its parent for one of its label folders (``labelsTr``, ``labelsTs``)."""
    for folder in (gt_dir, gt_dir.parent):
        if (folder / "dataset.json").is_file():
            return folder
    raise EvaluationError(f"{gt_dir}: no dataset.json in it or its parent (--dataset nnunet takes the labels from "
                          "the nnU-Net dataset folder's dataset.json)")


def label_space_for(dataset: str, labels: str | Mapping[int, str] | None = None,
                    gt_dir: str | Path | None = None, gt_entities: Mapping[str, str | None] | None = None
                    ) -> LabelSpace:
    """The scored structures and ignored values: a challenge's (``DATASET_LABELS``), ``--labels``,
    (``dseg``) the table of a BIDS derivative ground truth (``dseg.tsv``, or the most specific for
    ``gt_entities``: fMRIPrep's ``desc-aseg_dseg.tsv``), or (``nnunet``) the ``labels``
    of an nnU-Net dataset's ``dataset.json`` (its regions, when it has them, scored as nnU-Net
    scores them)."""
    if dataset == "nnunet":
        if gt_dir is None:
            raise EvaluationError("--dataset nnunet reads the labels from the dataset's dataset.json: give --gt")
        folder = nnunet_dataset_folder(Path(gt_dir))
        try:
            description = read_nnunet_description(folder)
            return nnunet_label_space(description["labels"], description.get("regions_class_order"),
                                      str(folder / "dataset.json"))
        except DataError as error:
            raise EvaluationError(str(error)) from error
    if dataset == "dseg":
        if gt_dir is None:
            raise EvaluationError("--dataset dseg reads the labels from the ground truth's dseg.tsv: give --gt")
        tables = dseg_tables(Path(gt_dir), gt_entities)
        table = next((t for t in tables if t.is_file()), None)
        if table is None:
            raise EvaluationError(f"{tables[-1]}: file not found{''.join(f', nor {t.name}' for t in tables[:-1])} "
                                  "(a derivatives pipeline describes its *_dseg values in dseg.tsv; for one that "
                                  "ships none: --dataset labels --labels '0:background,1:GM,2:WM,3:CSF')")
        try:
            return parse_labels(read_dseg_tsv(table))
        except DataError as error:
            raise EvaluationError(str(error)) from error
    if dataset == "labels":
        if labels is None:
            raise EvaluationError("--dataset labels needs --labels, e.g. '0:background,1:lesion'")
        return parse_labels(labels)
    if dataset not in DATASET_LABELS:
        raise EvaluationError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    return DATASET_LABELS[dataset]


def label_names(labels: str | Mapping[int, str], option: str = "--labels") -> dict[int, str]:
    """``"0:background,1:lesion"`` (or a dict) -> value -> name; background 0 added when not named."""
    if isinstance(labels, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in labels.split(","))):
            value, sep, name = item.partition(":")
            if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
                raise EvaluationError(f"{option}: expected value:name, got {item!r}")
            value, name = int(value), name.strip()
            if value in pairs:
                raise EvaluationError(f"{option}: value {value} is named twice ({pairs[value]}, {name})")
            pairs[value] = name
        labels = pairs
    named = {int(v): str(n) for v, n in labels.items()}
    return named if 0 in named or "background" in {n.casefold() for n in named.values()} else {0: "background", **named}


def prediction_names(pred_dir: str | Path, dataset: str, pred_labels: str | Mapping[int, str] | None = None,
                     pred_entities: Mapping[str, str | None] | None = None) -> tuple[dict[int, str], str] | None:
    """What the predictions' values are called, and where that is said: ``--pred-labels`` (another
    tool's segmentations: FSL FAST's ``1:CSF,2:GM,3:WM``), or for ``--dataset dseg`` the
    ``dseg.tsv`` of a prediction that is a BIDS derivative; None when the predictions are taken in
    the ground truth's values."""
    if pred_labels is not None:
        return label_names(pred_labels, "--pred-labels"), "--pred-labels"
    if dataset != "dseg" or not is_derivative(Path(pred_dir)):
        return None
    table = next((t for t in dseg_tables(Path(pred_dir), pred_entities) if t.is_file()), None)
    if table is None:
        return None
    try:
        return read_dseg_tsv(table), str(table)
    except DataError as error:
        raise EvaluationError(str(error)) from error


def recoding_by_name(predicted: Mapping[int, str], source: str, space: LabelSpace, truth: str
                     ) -> dict[int, int] | None:
    """The predictions' values -> the ground truth's, matched by the names of their structures
    (letter case aside): where two label maps number the same structures otherwise (a model of
    iSeg writes CSF 10, a manual BIDS derivative says 1, FSL FAST 1 too). None where they agree.
    A structure named on one side only is an error naming it: one the truth cannot contradict, or
    one the prediction cannot have found, would be scored wrongly."""
    named = dict(zip(space.class_values, space.class_names, strict=True))
    if dict(predicted) == named:
        return None
    by_name = {name.casefold(): value for value, name in named.items()}
    unknown = [name for name in predicted.values() if name.casefold() not in by_name]
    unfound = [name for name in named.values() if name.casefold() not in {n.casefold() for n in predicted.values()}]
    if unknown or unfound:
        sides = [f"{source} names {unknown} that {truth} does not"] * bool(unknown) + \
            [f"{truth} names {unfound} that {source} does not"] * bool(unfound)
        raise EvaluationError(f"{'; '.join(sides)}: a prediction's structures are matched to the ground truth's by "
                              "name")
    return {value: by_name[name.casefold()] for value, name in predicted.items()}


def recoded(labels: np.ndarray, recoding: Mapping[int, int], path: Path) -> np.ndarray:
    """A label map's values through ``recoding``; a value it lacks is an error naming the file."""
    values = present_values(labels)
    unknown = sorted(set(values) - set(recoding))
    if unknown:
        raise EvaluationError(f"{path}: label values {unknown} are not among the predictions' named values "
                              f"{sorted(recoding)}")
    return remapped(labels, recoding, values, dtype=labels.dtype)


def subject_of(name: str) -> str | None:
    """The subject id a label file's name carries: the name without its extension and a
    ``_seg`` / ``-label`` / ``_gt``... suffix (``case_001_seg.nii.gz``, ``case_001.nii.gz``)."""
    match = LABEL_FILE.match(name)
    return match["stem"] if match else None


@dataclass
class Matching:
    """Predictions paired with ground truth by subject id."""

    pairs: dict[str, tuple[Path, Path]]  # subject -> (prediction, ground truth)
    unpredicted: list[str]  # subjects with ground truth but no prediction
    unknown: list[Path]  # prediction files that name no subject of the ground truth
    keep_largest_gains: str = ""  # with evaluate_matching(keep_largest=True): the table of :func:`gains_table`


def match_predictions(pred_dir: Path, truths: Mapping[str, Path],
                      pred_entities: Mapping[str, str | None] | None = None) -> Matching:
    """Pair each label file of ``pred_dir`` with its subject's ground truth, whatever the naming:
    ``<subject>_seg.nii.gz`` (ours), ``<subject>.nii.gz`` (nnU-Net's) or the ground truth's own
    file name; of a BIDS derivative, the label maps with ``pred_entities``; failing those, the
    subject id followed by another tool's suffix (``subject-9_pveseg.nii.gz``), for a subject no
    file names exactly. Probability maps and other files are passed over."""
    pairs: dict[str, tuple[Path, Path]] = {}
    unknown = []
    files = _prediction_files(pred_dir, truths, pred_entities)
    exact = {subject for _, subject, named_exactly in files if named_exactly}
    for path, subject, named_exactly in files:
        if subject is None or (not named_exactly and subject in exact):
            unknown.append(path)
        elif subject in pairs:
            raise EvaluationError(f"{pred_dir}: two predictions for {subject}: {pairs[subject][0].name}, {path.name}")
        else:
            pairs[subject] = (path, Path(truths[subject]))
    if not pairs and not unknown:
        raise EvaluationError(f"{pred_dir}: no prediction files (*.nii.gz, *.nii, *.hdr, *.mgz)")
    unpredicted = sorted(set(truths) - set(pairs), key=natural_key)
    return Matching(dict(sorted(pairs.items(), key=lambda item: natural_key(item[0]))), unpredicted, unknown)


def _prediction_files(pred_dir: Path, truths: Mapping[str, Path], pred_entities: Mapping[str, str | None] | None
                      ) -> list[tuple[Path, str | None, bool]]:
    """Each label file of ``pred_dir`` with the subject of ``truths`` it names (None: none) and
    whether it names it exactly: a BIDS derivative's ``*_dseg`` files (those with
    ``pred_entities``) by subject[_session], else the folder's files by name, or by the subject id
    and a suffix of another tool's (:func:`_named_subject`, not exactly)."""
    if is_derivative(pred_dir) or pred_entities:
        return [(path, subject if subject in truths else None, True)
                for subject, path in _derivative_maps(pred_dir, pred_entities, "--pred-entities").items()]
    by_name = {Path(path).name: subject for subject, path in truths.items()}
    files = []
    for path in sorted(pred_dir.iterdir(), key=lambda p: natural_key(p.name)):
        stem = subject_of(path.name)
        if path.is_file() and stem is not None and not stem.endswith(PROBABILITIES):
            subject = by_name.get(path.name) or (stem if stem in truths else None)
            files.append((path, subject, True) if subject else (path, _named_subject(stem, truths), False))
    return files


def _named_subject(stem: str, truths: Mapping[str, Path]) -> str | None:
    """The subject a file of another tool names by its id and a suffix of the tool's own after a
    separator (FSL FAST's ``subject-9_pveseg``, SynthSeg's ``sub-01_synthseg``): the longest
    such id, so that ``subject-10_...`` is never ``subject-1``'s."""
    named = [subject for subject in truths if any(stem.startswith(subject + sep) for sep in "_-.")]
    return max(named, key=len) if named else None


def truth_files(gt_dir: Path, dataset: str, gt_entities: Mapping[str, str | None] | None = None,
                gt_pattern: str | None = None) -> dict[str, Path]:
    """Subject id -> ground-truth file: the files ``gt_pattern`` names (a NIfTI dataset's
    ``label_pattern``, ``{subject}/label.nii.gz``), a BIDS derivative's ``*_dseg`` files by
    subject[_session] (those with ``gt_entities``), top-level NIfTI files named by subject, else
    the dataset's own layout found by its DataModule."""
    if gt_pattern:
        try:
            return files_by_pattern(gt_dir, gt_pattern)
        except ValueError as error:  # DataError, or a pattern without {subject}
            raise EvaluationError(f"--gt-pattern: {error}") from error
    if is_derivative(gt_dir) or gt_entities:
        return _derivative_maps(gt_dir, gt_entities, "--gt-entities")
    flat = {}
    for path in sorted(gt_dir.iterdir()):
        match = FLAT_TRUTH.match(path.name)
        if path.is_file() and match:
            if match["stem"] in flat:
                raise EvaluationError(f"{gt_dir}: two ground-truth files for {match['stem']}: "
                                      f"{flat[match['stem']].name}, {path.name}")
            flat[match["stem"]] = path
    if flat:
        return flat
    if dataset not in LAYOUTS:
        raise EvaluationError(f"{gt_dir}: no NIfTI files at the top level (dataset {dataset!r} has no known layout); "
                              "for a folder per subject give the files' pattern, as the NIfTI DataModule's "
                              "label_pattern: --gt-pattern '{subject}/label.nii.gz'")
    import datamodules  # Lightning and the loaders: only needed to read the challenge layouts

    layout = getattr(datamodules, LAYOUTS[dataset])(str(gt_dir), cache_dir=None, **LAYOUT_ARGS.get(dataset, {}))
    subjects = layout.subjects()
    return {sid: s.label for sid, s in subjects.items() if s.label is not None}


def _derivative_maps(folder: Path, entities: Mapping[str, str | None] | None, option: str) -> dict[str, Path]:
    """A BIDS derivative's label maps by subject[_session], those with ``entities`` (``option``
    names them in the errors: a folder that is no derivative, or several maps for a session)."""
    if not is_derivative(folder):
        raise EvaluationError(f"{folder}: {option} picks among a BIDS derivative's label maps; this is not one "
                              "(no dataset_description.json with DatasetType derivative)")
    try:
        return derivative_files(folder, entities)
    except DataError as error:
        raise EvaluationError(f"{error} (choose by entities: {option} desc=aseg, space= for none)"
                              if not entities else str(error)) from error


def load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(integer label map (D, H, W), affine, spacing in mm) of one file; an unreadable,
    truncated or implausible file is an error naming it (never a traceback from zlib). NRRD and
    MetaImage files (nnU-Net datasets' ``file_ending`` may be ``.nrrd`` or ``.mha``) are read as
    training reads them, through SimpleITK."""
    if is_itk_file(path):
        try:
            data, affine = load_volume(Path(path))
            return whole_label_values(data, path), affine, tuple(float(z) for z in voxel_spacing(affine))
        except DataError as error:
            raise EvaluationError(str(error)) from error
    try:
        image = nib.load(str(path))
        check_size(Path(path), image)
        data = np.asarray(image.dataobj)
    except DataError as error:
        raise EvaluationError(str(error)) from error
    except Exception as error:  # nibabel and zlib raise many types for corrupt or truncated files
        raise EvaluationError(f"{path}: cannot read the label map ({type(error).__name__}: {error})") from error
    data = without_singleton_axes(data)
    if data.ndim != 3:
        raise EvaluationError(f"{path}: expected a 3D label map, got shape {data.shape}")
    try:
        values = whole_label_values(data, path)  # as training reads label maps: never rounded in silence
    except DataError as error:
        raise EvaluationError(str(error)) from error
    return values, np.asarray(image.affine, dtype=float), tuple(float(z) for z in image.header.get_zooms()[:3])


def match_folders(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                  gt_entities: Mapping[str, str | None] | None = None,
                  pred_entities: Mapping[str, str | None] | None = None, gt_pattern: str | None = None) -> Matching:
    """Predictions of ``pred_dir`` paired with the ground truth of ``gt_dir`` (see
    :func:`match_predictions`)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise EvaluationError(f"{folder}: not a folder")
    return match_predictions(pred_dir, truth_files(gt_dir, dataset, gt_entities, gt_pattern), pred_entities)


def score_pairs(pairs: Mapping[str, tuple[Path, Path]], space: LabelSpace, dataset: str,
                affine_tolerance: float = 1e-3, progress: bool | None = None, lesion_rule: LesionRule | None = None,
                recoding: Mapping[int, int] | None = None, gains: LargestComponentGains | None = None) -> list[dict]:
    """One row per subject and structure (:data:`core.metrics.ROW_COLUMNS`; with ``lesion_rule``,
    also :data:`core.lesions.LESION_COLUMNS`);
    prediction and truth of different shape or affine, or with values outside the label map, are
    errors naming them. ``progress``: a bar over the subjects (None: when writing to a terminal).
    ``recoding``: the predictions' values -> the truth's (:func:`recoding_by_name`). ``gains``:
    each pair is also added to it (:func:`largest_component_gains`), in the same reading."""
    rows, bad = [], BadInputs(len(pairs), "pairs", kind=EvaluationError)  # every pair's problem, no table of the rest
    for subject, (prediction_path, truth_path) in tqdm(pairs.items(), desc="scoring", unit="subject",
                                                       disable=None if progress is None else not progress):
        rows += bad.attempt(lambda s=subject, p=prediction_path, t=truth_path:
                            _score_pair(s, p, t, space, dataset, affine_tolerance, lesion_rule, recoding,
                                        gains)) or []
    bad.raise_any()
    return rows


def _score_pair(subject: str, prediction_path: Path, truth_path: Path, space: LabelSpace, dataset: str,
                affine_tolerance: float, lesion_rule: LesionRule | None = None,
                recoding: Mapping[int, int] | None = None, gains: LargestComponentGains | None = None) -> list[dict]:
    """The rows of one subject (see :func:`score_pairs`)."""
    pred, truth, spacing = load_pair(prediction_path, truth_path, space, dataset, affine_tolerance, recoding)
    if gains is not None:
        ignored = value_mask(truth, space.ignored_values)  # count for nothing, as in the scores
        gains.add(np.where(ignored, gains.background, pred), np.where(ignored, gains.background, truth))
    return subject_rows(subject, pred, truth, spacing, space.structure_values, space.ignored_values, lesion_rule)


def load_pair(prediction_path: Path, truth_path: Path, space: LabelSpace, dataset: str, affine_tolerance: float,
              recoding: Mapping[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A prediction and its ground truth on one grid, in the truth's values, and the spacing;
    grids or values that do not fit are errors naming the files."""
    pred, pred_affine, _ = load_label(prediction_path)
    if recoding is not None:
        pred = recoded(pred, recoding, prediction_path)
    truth, truth_affine, spacing = load_label(truth_path)
    if pred.shape != truth.shape or not np.allclose(pred_affine, truth_affine, atol=affine_tolerance):
        # The same grid stored in another voxel order (fMRIPrep's RAS beside a LAS scan): taken as it is.
        reordered, reordered_affine = reorient_like(truth, truth_affine, pred_affine, truth_path)
        same_shape = reordered.shape == pred.shape
        if same_shape and np.allclose(pred_affine, reordered_affine, atol=affine_tolerance):
            truth, spacing = reordered, tuple(voxel_spacing(reordered_affine))
        elif pred.shape != truth.shape:
            raise EvaluationError(f"{prediction_path} has shape {pred.shape} but {truth_path} has {truth.shape}")
        else:
            apart = (f": the same voxel lies up to {grid_offset(pred_affine, reordered_affine, pred.shape):.4g} mm "
                     "apart" if same_shape else "")
            raise EvaluationError(f"{prediction_path} and {truth_path} have different affines{apart}")
    for path, labels in ((prediction_path, pred), (truth_path, truth)):
        unknown = sorted(set(present_values(labels)) - set(space.value_to_class))
        if unknown:
            raise EvaluationError(f"{path}: label values {unknown} are not in the {dataset} label map "
                                  f"{sorted(space.value_to_class)}{_other_convention(dataset, labels)}")
    return pred, truth, spacing


def largest_component_gains(space: LabelSpace, dataset: str) -> LargestComponentGains:
    """What ``--keep-largest-gains`` adds each scored pair to: the scored structures as classes
    and the background value; structures that overlap (BraTS' regions, WT holding TC) are refused
    before any volume is scored, since keeping a largest component judges classes."""
    structures = space.structure_values
    values = [v for members in structures.values() for v in members]
    if len(values) != len(set(values)):
        raise EvaluationError(f"--keep-largest-gains: the {dataset} structures overlap (regions: "
                              f"{list(structures)}); it judges structures of classes")
    return LargestComponentGains(structures, background=min(v for v, c in space.value_to_class.items() if c == 0))


def gains_table(gains: LargestComponentGains) -> str:
    """Whether keeping only the largest connected component of each structure (and of the whole
    foreground) raised its mean Dice on the scored pairs, as a table and the ``predict.py
    --keep-largest`` of those that gain (nnU-Net decides its postprocessing so, on held-out
    predictions)."""
    means = gains.means()
    lines = [f"Largest connected component only (26-connected), mean Dice over {gains.pairs} subjects, each "
             "structure alone:", "", "| structure | as predicted | largest only | gain |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {before:.4f} | {after:.4f} | {after - before:+.4f} |"
              for name, (before, after) in means.items()]
    gaining = [name for name, (before, after) in means.items() if after > before]
    lines += ["", f"gains: predict.py --keep-largest {' '.join(gaining)}" if gaining else "gains: none"]
    return "\n".join(lines) + "\n"


def _other_convention(dataset: str, labels: np.ndarray) -> str:
    """For a BraTS label map scored under the wrong convention (a 2023 case's enhancing tumour 3
    under ``brats``), the ``--dataset`` whose values it holds."""
    if dataset not in BRATS_CONVENTIONS:
        return ""
    values = set(present_values(labels))
    fitting = [name for name, (classes, _) in BRATS_CONVENTIONS.items() if values <= set(classes.value_to_class)]
    return f" (its values are those of --dataset {' or '.join(fitting)})" if fitting else ""


def missing_text(matching: Matching, pred_dir: Path | str, gt_dir: Path | str) -> str:
    """What was not scored, in one line per side (empty when every subject was)."""
    lines = []
    if matching.unpredicted:
        lines.append(f"not predicted in {pred_dir} ({len(matching.unpredicted)}): {', '.join(matching.unpredicted)}")
    if matching.unknown:
        names = ", ".join(p.name for p in matching.unknown)
        lines.append(f"no ground truth in {gt_dir} for ({len(matching.unknown)}): {names}")
    return "\n".join(lines)


def evaluate_matching(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                      labels: str | Mapping[int, str] | None = None, require_all: bool = False,
                      affine_tolerance: float = 1e-3, progress: bool | None = None,
                      gt_entities: Mapping[str, str | None] | None = None,
                      pred_entities: Mapping[str, str | None] | None = None, lesion_rule: str | None = None,
                      pred_labels: str | Mapping[int, str] | None = None,
                      before_scoring: Callable[[], None] | None = None, gt_pattern: str | None = None,
                      keep_largest: bool = False) -> tuple[list[dict], Matching]:
    """Score every prediction of ``pred_dir`` that has a ground truth in ``gt_dir``: the rows
    (:func:`score_pairs`) and how the files were paired. Subjects on one side only are left out
    (an error with ``require_all``). ``gt_entities`` (``pred_entities``): which of a BIDS
    derivative's label maps is the ground truth (the prediction), by file-name keys (``None``:
    the entity absent). ``lesion_rule``: and the lesion-wise scores by that rule (a BraTS
    challenge's, or ``DILATION:MIN_VOLUME``). ``pred_labels``: the predictions' own values and
    names (``"1:CSF,2:GM,3:WM"``), matched to the ground truth's by name (:func:`recoding_by_name`);
    a BIDS derivative's ``dseg.tsv`` says them for ``--dataset dseg``. ``before_scoring``: called
    once the inputs are checked, before any volume is scored (evaluate.py checks its output there).
    ``gt_pattern``: the ground truth's files by a pattern (:func:`truth_files`). ``keep_largest``:
    and whether keeping each structure's largest component gains (``matching.keep_largest_gains``)."""
    try:
        rule = None if lesion_rule is None else rule_of(lesion_rule)
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    space = label_space_for(dataset, labels, gt_dir, gt_entities)
    gains = largest_component_gains(space, dataset) if keep_largest else None
    matching = match_folders(pred_dir, gt_dir, dataset, gt_entities, pred_entities, gt_pattern)
    if require_all and (missing := missing_text(matching, pred_dir, gt_dir)):
        raise EvaluationError(missing.replace("\n", "; ") + " (--require-all)")
    named = prediction_names(pred_dir, dataset, pred_labels, pred_entities)
    recoding = None if named is None else recoding_by_name(*named, space, _truth_source(dataset, gt_dir, gt_entities))
    if before_scoring is not None:
        before_scoring()
    rows = score_pairs(matching.pairs, space, dataset, affine_tolerance, progress, rule, recoding, gains)
    if gains is not None and gains.pairs:
        matching.keep_largest_gains = gains_table(gains)
    return rows, matching


def _truth_source(dataset: str, gt_dir: str | Path, gt_entities: Mapping[str, str | None] | None) -> str:
    """Where the ground truth's structure names come from, for the errors of a name match."""
    if dataset == "dseg":
        return str(next((t for t in dseg_tables(Path(gt_dir), gt_entities) if t.is_file()), Path(gt_dir) / "dseg.tsv"))
    return "--labels" if dataset == "labels" else f"the {dataset} label map"


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                     labels: str | Mapping[int, str] | None = None, require_all: bool = False,
                     affine_tolerance: float = 1e-3) -> list[dict]:
    """One dict per scored subject and structure (subject, structure and the metric set); see
    :func:`evaluate_matching`."""
    return evaluate_matching(pred_dir, gt_dir, dataset, labels, require_all, affine_tolerance)[0]


def provenance_text(pred_dir: Path, subjects: Sequence[str]) -> str:
    """Which logged prediction run (checkpoints, settings) wrote the scored files, as lines for
    ``summary.md``; said as a warning when they come from several (their scores are pooled)."""
    groups = predictions_by_run(pred_dir, subjects)
    if list(groups) == [NOT_LOGGED]:
        return ""
    if len(groups) > 1:
        warnings.warn(f"{pred_dir}: the scored predictions come from {len(groups)} different checkpoints or "
                      f"settings ({'; '.join(f'{run}: {len(ids)}' for run, ids in groups.items())} subjects); their "
                      "scores are pooled in one table", DataWarning, stacklevel=2)
    lines = []
    for run, ids in groups.items():
        count = f"{len(ids)} subject{'s' * (len(ids) > 1)}"
        lines.append(f"\nPredictions of {count} not in the folder's log (written before it, or by another tool).\n"
                     if run == NOT_LOGGED else f"\nPredictions of {count} by {run}.\n")
    flagged = logged_input_problems(pred_dir, subjects)
    if flagged:
        lines.append(f"\n{len(flagged)} of {len(subjects)} scored subjects were segmented from scans unlike the "
                     "training scans (said at prediction; their scores are not the model's on scans like its own):\n")
        lines += [f"- {subject}: {'; '.join(problems)}\n" for subject, problems in flagged.items()]
    return "".join(lines)


def parse_entity(text: str) -> tuple[str, str | None]:
    """``desc=aseg`` -> ``("desc", "aseg")``; ``space=`` -> ``("space", None)``: the entity absent."""
    key, equals, value = text.partition("=")
    if not equals or not re.fullmatch(r"[a-z]+", key) or not re.fullmatch(r"[a-zA-Z0-9]*", value):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with a BIDS entity key (desc=aseg, space=)")
    return key, value or None


def scoring_record(args: argparse.Namespace) -> dict[str, Any]:
    """What an evaluate.py run scores: the folders (absolute) and every option that changes a score."""
    options = ("dataset", "labels", "pred_labels", "lesion_wise", "gt_entities", "pred_entities", "gt_pattern")
    record = {"written_by": "evaluate.py", "pred": str(Path(args.pred).resolve()), "gt": str(Path(args.gt).resolve()),
              **{name: getattr(args, name) for name in options}}
    return json.loads(json.dumps(record))  # as it reads back


def replaceable_scores(output: Path, record: Mapping[str, Any], overwrite: bool) -> str | None:
    """Why the scores in ``output`` must not be replaced by ``record``'s, or None: another
    evaluation's (other predictions, ground truth or options), or files of those names that
    evaluate.py did not write; the same evaluation again replaces its own."""
    present, earlier = earlier_report(output, SCORE_FILES, SCORING_RECORD)
    if not present or overwrite or earlier == record:
        return None
    what = (f"the scores of another evaluation ({earlier.get('pred')} against {earlier.get('gt')})"
            if isinstance(earlier, dict) and earlier.get("written_by") == "evaluate.py"
            else f"{', '.join(present)}, not recorded as evaluate.py's")
    return f"{output}: holds {what}; refusing to replace them: choose another --output or pass --overwrite"


def write_outputs(rows: Sequence[dict], output: Path, provenance: str = "", lesion_rule: str | None = None) -> str:
    """Write scores.csv, summary.csv and summary.md (the table, the lesion-wise one with
    ``lesion_rule``, then ``provenance``) into ``output``; returns the Markdown."""
    lesions = lesion_rule is not None
    summary = summarise(rows, [*COLUMNS.values(), *(LESION_COLUMNS if lesions else ())])
    table = (markdown_table([s for s in summary if s["metric"] in COLUMNS.values()])
             + (f"\n{lesion_table(rows, lesion_rule)}" if lesions else "") + provenance)
    scores, summary_csv, summary_md = SCORE_FILES
    write_text_atomically(output / scores, csv_text(rows, score_columns(lesions)))
    write_text_atomically(output / summary_csv, csv_text(summary, ["structure", "metric", "mean", "std", "n"]))
    write_text_atomically(output / summary_md, table)
    return table


def _lesion_spec(spec: str) -> str:
    """argparse's check of ``--lesion-wise``: a rule :func:`core.lesions.lesion_rule` takes."""
    try:
        rule_of(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of predictions: <subject>_seg.nii.gz, "
                        "<subject>.nii.gz, the ground truth's file names, or <subject>_<another tool's suffix>")
    parser.add_argument("--gt", required=True, type=Path, help="dataset folder or flat folder of label files")
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="whose structures to score; brats: BraTS 2018-2021 (enhancing tumour 4), brats2023: "
                             "2023 on (3), brats_post_treatment: 2024's with the resection cavity; "
                             "dseg: those of the ground truth's dseg.tsv (BIDS); "
                             "nnunet: those of the dataset.json in --gt or its parent (labels, regions)")
    parser.add_argument("--labels", help="for --dataset labels: '0:background,1:lesion'")
    parser.add_argument("--pred-labels", metavar="VALUE:NAME,...",
                        help="the predictions' own values and names, matched to the ground truth's structures by "
                             "name: another tool's segmentations (FSL FAST: '1:CSF,2:GM,3:WM'); a BIDS derivative "
                             "given as --pred has them in its dseg.tsv")
    parser.add_argument("--lesion-wise", type=_lesion_spec, metavar="RULE",
                        help="also the lesion-wise Dice and HD95 by which BraTS ranks from 2023 on, with that "
                             f"challenge's rule ({', '.join(LESION_RULES)}), or DILATION:MIN_VOLUME (voxels, mm³: "
                             "1:10) for lesions of other kinds")
    parser.add_argument("--gt-pattern", metavar="PATTERN",
                        help="the ground-truth files below --gt by a pattern, as the NIfTI DataModule's "
                             "label_pattern: '{subject}/label.nii.gz', '{site}/{subject}/seg.nii.gz' (ids "
                             "siteA_patient01, as training named them)")
    parser.add_argument("--keep-largest-gains", action="store_true",
                        help="also say, per structure, whether keeping only its largest connected component raises "
                             "its mean Dice on these subjects (run on validation subjects; predict.py "
                             "--keep-largest applies the ones that gain)")
    parser.add_argument("--gt-entities", nargs="+", type=parse_entity, metavar="KEY=VALUE",
                        help="which of a BIDS derivative's label maps is the ground truth, by entities: "
                             "desc=aseg (fMRIPrep's aseg), space= (the entity absent)")
    parser.add_argument("--pred-entities", nargs="+", type=parse_entity, metavar="KEY=VALUE",
                        help="the same for the predictions, when --pred is a BIDS derivative holding several maps "
                             "per session (a pipeline's own, scored as a method)")
    parser.add_argument("--output", type=Path, help="where the results go (default: --pred)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the scores of another evaluation (or files of their names) in --output")
    parser.add_argument("--require-all", action="store_true",
                        help="a subject with ground truth but no prediction (or the reverse) is an error")
    args = parser.parse_args(argv)
    one_line_warnings("evaluate.py")
    output, record = args.output or args.pred, scoring_record(args)

    def check_output() -> None:  # once the inputs are known good, before any volume is scored
        refusal = replaceable_scores(output, record, args.overwrite)
        if refusal:
            raise EvaluationError(refusal)

    try:
        rows, matching = evaluate_matching(args.pred, args.gt, args.dataset, args.labels, args.require_all,
                                           gt_entities=dict(args.gt_entities or ()),
                                           pred_entities=dict(args.pred_entities or ()), lesion_rule=args.lesion_wise,
                                           pred_labels=args.pred_labels, before_scoring=check_output,
                                           gt_pattern=args.gt_pattern, keep_largest=args.keep_largest_gains)
    except ValueError as error:  # EvaluationError, and the DataModules' DataError naming the bad file
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    missing = missing_text(matching, args.pred, args.gt)
    if not rows:
        print(f"evaluate.py: error: no prediction in {args.pred} has ground truth in {args.gt}\n{missing}",
              file=sys.stderr)
        return 2
    provenance = provenance_text(args.pred, list(matching.pairs))
    write_text_atomically(output / SCORING_RECORD, json.dumps(record, indent=1))  # first: tables cut short stay its
    print(write_outputs(rows, output, provenance, args.lesion_wise), end="")
    scored = len(matching.pairs)
    print(f"scored {scored} subject{'s' * (scored != 1)}; written to {output}/{', '.join(SCORE_FILES)}")
    if matching.keep_largest_gains:
        print("\n" + matching.keep_largest_gains, end="")
    if missing:
        print(missing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
