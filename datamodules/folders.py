"""Reading a folder in a dataset's layout for prediction, by the DataModule a checkpoint names.

Only the DataModules of this package are accepted: a checkpoint names its DataModule by class
path, and importing whatever a file names would let a checkpoint run code.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.bids import BIDSOutputNames
from core.export import OUR_NAMES, OutputNames, named_by_case
from core.io import DataError, DataWarning
from core.modality_profiles import ANY_CONTRAST
from core.volumes import Subject
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule
from datamodules.bids import BIDSDataModule, parse_modality
from datamodules.brats import BraTSDataModule
from datamodules.decathlon import DecathlonDataModule
from datamodules.freesurfer import FreeSurferDataModule
from datamodules.iseg import ISeg2017DataModule, ISeg2019DataModule
from datamodules.mrbrains18 import MRBrainS18DataModule
from datamodules.nifti import NiftiDataModule
from datamodules.nnunet import NnUNetDataModule

_CLASSES = (ISeg2017DataModule, ISeg2019DataModule, MRBrainS18DataModule, BraTSDataModule, DecathlonDataModule,
            NiftiDataModule, NnUNetDataModule, BIDSDataModule, FreeSurferDataModule)
# By the class path checkpoints record (``datamodules.iseg.ISeg2017DataModule``) and the shorter
# one of the package (``datamodules.ISeg2017DataModule``).
KNOWN_DATAMODULES: dict[str, type[VolumeSegmentationDataModule]] = {
    **{f"{cls.__module__}.{cls.__qualname__}": cls for cls in _CLASSES},
    **{f"datamodules.{cls.__qualname__}": cls for cls in _CLASSES},
}


def layout_arguments(cls: type[VolumeSegmentationDataModule], saved: Mapping[str, Any]) -> dict[str, Any]:
    """The saved arguments that say how ``cls`` finds subjects in a folder: the modalities and
    the dataset's own arguments (``label_mode``, ``image_pattern``, ...), i.e. those its class
    adds to the shared base. Splits, sampling and preprocessing play no part in finding files."""
    shared = set(inspect.signature(VolumeSegmentationDataModule.__init__).parameters)
    own = (set(inspect.signature(cls.__init__).parameters) - shared - {"kwargs"}) | {"modalities"}
    return {k: v for k, v in saved.items() if k in own}


def datamodule_class(class_path: str | None, source: str) -> type[VolumeSegmentationDataModule]:
    """The DataModule class a checkpoint names, if it is one of this package's."""
    if not class_path:
        raise DataError(f"{source}: records no DataModule; give the modality files instead of a folder")
    if class_path not in KNOWN_DATAMODULES:
        raise DataError(f"{source}: names the DataModule {class_path!r}, which is not one of "
                        f"{sorted(KNOWN_DATAMODULES)}; refusing to import it")
    return KNOWN_DATAMODULES[class_path]


# What a BIDS dataset likely calls a modality of the challenges' layouts: only to suggest --bids-modalities.
BIDS_SUFFIXES = {"T1": "T1w", "T2": "T2w", "FLAIR": "FLAIR", "PD": "PDw", "T1ce": "ce-gadolinium_T1w",
                 "T1IR": "acq-ir_T1w", ANY_CONTRAST: "T1w"}
BIDS_CLASS = f"{BIDSDataModule.__module__}.{BIDSDataModule.__qualname__}"


def as_bids(record: Mapping[str, Any] | None, bids_modalities: Sequence[str], modalities: Sequence[str],
            source: str) -> dict[str, Any]:
    """The DataModule record that reads a BIDS dataset for a model trained on ``modalities`` in
    any layout: ``bids_modalities`` (BIDS suffixes, optionally after entities: ``T1w``,
    ``acq-mprage_T1w``) stand for them in order. A model trained on BIDS keeps its other layout
    arguments (``image_entities``, ``run``); predictions are then written as a BIDS derivative."""
    wanted = 1 if list(modalities) == [ANY_CONTRAST] else len(modalities)
    if len(bids_modalities) != wanted:
        raise DataError(f"--bids-modalities {' '.join(bids_modalities)}: {source} takes {wanted} modalities "
                        f"({', '.join(modalities)}), one BIDS suffix for each in that order")
    for spec in bids_modalities:
        try:
            parse_modality(spec)
        except ValueError as error:
            raise DataError(f"--bids-modalities: {error}") from error
    record = record or {}
    trained_on_bids = KNOWN_DATAMODULES.get(str(record.get("class_path"))) is BIDSDataModule
    kept = dict(record.get("init_args") or {}) if trained_on_bids else {}
    return {"class_path": BIDS_CLASS, "init_args": {**kept, "modalities": list(bids_modalities)}}


def with_brain_masks_of(record: Mapping[str, Any] | None, masks: Path | str, source: str) -> dict[str, Any]:
    """``record`` (:func:`folder_layout`'s) reading each subject's brain mask too, for a dataset
    folder of scans that are not skull-stripped (``predict.py --brain-mask``): a BIDS dataset's
    from the derivatives pipeline ``masks`` (``masks_dir``), a NIfTI folder's by the pattern
    ``masks`` (``mask_pattern``, ``{subject}/brain_mask.nii.gz``)."""
    record = dict(record or {})
    cls = KNOWN_DATAMODULES.get(str(record.get("class_path")))
    init_args = dict(record.get("init_args") or {})
    if cls is NiftiDataModule and "{" in str(masks):
        return {**record, "init_args": {**init_args, "mask_pattern": str(masks)}}
    if cls is not BIDSDataModule:
        layout = f"reads {cls.__name__} folders" if cls else "records no DataModule"
        raise DataError(f"{masks}: --brain-mask with a dataset folder names the derivatives pipeline of a BIDS "
                        f"dataset's brain masks (sub-*_desc-brain_mask.nii.gz), or a NIfTI folder's mask pattern "
                        f"('{{subject}}/brain_mask.nii.gz'), but {source} {layout} (--bids-modalities reads the "
                        "folder as BIDS); in another layout give one subject's files and its mask")
    if Path(masks).is_file():
        raise DataError(f"{masks}: a file; with a dataset folder, --brain-mask names the derivatives pipeline folder "
                        "that holds each session's mask (sub-*_desc-brain_mask.nii.gz)")
    return {**record, "init_args": {**init_args, "masks_dir": os.path.abspath(masks)}}


def without_missing_masks(record: Mapping[str, Any] | None, folder: Path) -> Mapping[str, Any] | None:
    """``record`` as a checkpoint saved it, less the brain masks of a model trained with them
    (a BIDS ``masks_dir``, a NIfTI ``mask_pattern``) where ``folder`` has none of them (a dataset
    of skull-stripped scans, or masks elsewhere: ``--brain-mask``), said in a warning. A folder
    that has them is read with its masks, as the training folder was; a BIDS pipeline given as
    an absolute path is the training dataset's own, used for that dataset only (never another's
    subjects of the same ids)."""
    init_args = dict((record or {}).get("init_args") or {})
    masks, pattern = init_args.get("masks_dir"), init_args.get("mask_pattern")
    if masks is not None:
        key, value = "masks_dir", masks
        here = bool(init_args.get("data_dir")) and Path(init_args["data_dir"]).resolve() == Path(folder).resolve()
        if (here or not Path(masks).is_absolute()) and (Path(folder) / masks).is_dir():
            return record
        missing = (f"{Path(folder) / masks}: not found" if not Path(masks).is_absolute()
                   else f"{folder}: not the training dataset, whose masks are {masks}")
    elif pattern is not None:
        key, value = "mask_pattern", pattern
        if any(Path(folder).glob(re.sub(r"\{[^}]*\}", "*", pattern))):
            return record
        missing = f"{folder}: no file like {pattern}"
    else:
        return record
    warnings.warn(f"{missing}; the model was trained on scans masked by their brain masks ({key} {value}), and these "
                  "are segmented as they are (--brain-mask names their masks)", DataWarning, stacklevel=2)
    return {**(record or {}), "init_args": {k: v for k, v in init_args.items() if k != key}}


def output_names(record: Mapping[str, Any] | None, case_names: bool = False,
                 any_contrast: bool = False) -> OutputNames:
    """How predictions of a checkpoint trained on ``record``'s DataModule are named: its dataset's
    convention (nnU-Net's ``<case>.nii.gz``), ours for anything else; with ``case_names``,
    ``<case>.nii.gz`` whatever the dataset (what BraTS takes as a submission), except for a BIDS
    derivative, whose names are its entities, and a model of ``any_contrast``'s the contrast it
    reads (``record``'s one modality): ``_desc-T2w_dseg``."""
    cls = KNOWN_DATAMODULES.get(str((record or {}).get("class_path")))
    names = cls.output_names if cls is not None else OUR_NAMES
    if case_names:
        names = named_by_case(names, cls.__name__ if cls else "this model", "--case-names")
    if any_contrast and isinstance(names, BIDSOutputNames):
        names = names.of_contrast(str(((record or {}).get("init_args") or {})["modalities"][0]))
    return names


def folder_layout(record: Mapping[str, Any] | None, modalities: Sequence[str], source: str,
                  contrast: str | None = None, bids_modalities: Sequence[str] | None = None
                  ) -> tuple[Mapping[str, Any] | None, list[str]]:
    """How a model trained on ``record``'s DataModule with ``modalities`` reads a folder: that
    record and those modalities, or with ``bids_modalities`` a BIDS dataset's (:func:`as_bids`),
    its suffixes the modalities the folder must offer (a model of any contrast: still any)."""
    if bids_modalities is None:
        if contrast is not None and list(modalities) == [ANY_CONTRAST] and record:  # the contrast read, by name
            read = {**(record.get("init_args") or {}), "modalities": [contrast]}
            return {**record, "init_args": read}, [ANY_CONTRAST]
        return record, list(modalities)
    if contrast is not None:
        raise DataError("--contrast and --bids-modalities both say what to read; give one")
    return (as_bids(record, bids_modalities, modalities, source),
            [ANY_CONTRAST] if list(modalities) == [ANY_CONTRAST] else list(bids_modalities))


def subjects_in_folder(folder: str | Path, record: Mapping[str, Any] | None, modalities: Sequence[str],
                       source: str, contrast: str | None = None, only: Sequence[str] | None = None) -> list[Subject]:
    """Every subject of ``folder``, read by the DataModule of ``record`` (a checkpoint's
    ``{"class_path", "init_args"}``, or :func:`folder_layout`'s), which must offer ``modalities``
    in that order; a model of any contrast reads the layout's ``contrast`` (default: the modality
    it was validated on). ``only``: just these subjects, by id or by what a split keeps together
    (a BIDS participant, ``sub-01``, stands for its sessions); a name that matches none is an error."""
    if contrast is not None and list(modalities) != [ANY_CONTRAST]:
        raise DataError(f"{source}: was trained on {list(modalities)}, not on any contrast; --contrast is for models "
                        "trained from label maps")
    record = record or {}
    cls = datamodule_class(record.get("class_path"), source)
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    layout = layout_arguments(cls, record.get("init_args") or {})
    if contrast is not None:
        layout["modalities"] = [contrast]
    try:
        datamodule = cls(data_dir=str(folder), cache_dir=None, **layout)
    except (TypeError, ValueError) as error:  # e.g. a Decathlon task whose dataset.json lacks a modality
        raise DataError(f"{folder}: cannot provide the modalities {list(modalities)} that {source} was "
                        f"trained on ({error})") from error
    # an any-contrast model reads the layout's one modality, whatever its contrast
    any_contrast = list(modalities) == [ANY_CONTRAST] and len(datamodule.modalities) == 1
    if not any_contrast and list(datamodule.modalities) != list(modalities):
        raise DataError(f"{folder}: offers modalities {list(datamodule.modalities)}, {source} was trained on "
                        f"{list(modalities)}")
    try:
        return datamodule.list_subjects(folder, require_labels=False, only=only)
    except NoSubjectsFound as error:
        if cls is BIDSDataModule or not (folder / "dataset_description.json").is_file():
            raise
        suggested = " ".join(BIDS_SUFFIXES.get(m, f"<{m}>") for m in modalities)
        raise NoSubjectsFound(f"{error}; it is a BIDS dataset: --bids-modalities names the BIDS suffixes that stand "
                              f"for the model's {', '.join(modalities)} (e.g. --bids-modalities {suggested})"
                              ) from error
