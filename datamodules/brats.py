"""BraTS as shipped: 2018-2021 (``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``) and 2023 on
(``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``: adult glioma, Sub-Saharan Africa, meningioma,
metastases, post-treatment glioma)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pytorch_lightning.utilities import rank_zero_warn

from core.dataset_labels import BRATS_CONVENTIONS
from core.io import DataError, DataWarning
from core.labels import LabelSpace
from core.volumes import Subject, natural_key
from datamodules.base import NoSubjectsFound, VolumeSegmentationDataModule

# The file suffix of each modality under the two namings BraTS has shipped. The model's names stay
# the same (a T1ce is a t1c), so a model trained on one release reads the other's folders.
NAMINGS: dict[str, dict[str, str]] = {
    "2018-2021": {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"},
    "2023+": {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f"},
}
# The label convention each naming comes with (what ``label_convention: auto`` takes).
NAMING_CONVENTION = {"2018-2021": "brats", "2023+": "brats2023"}
# What a label value outside a convention's map most likely means, said with that error.
OTHER_CONVENTION_HINTS = {
    "brats": "a 3 is BraTS 2023's enhancing tumour: label_convention: brats2023",
    "brats2023": "a 4 is the resection cavity of BraTS 2024's post-treatment glioma, whose files are named as "
                 "2023's: label_convention: brats_post_treatment",
}
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_SUFFIX_NAMING = {suffix: naming for naming, suffixes in NAMINGS.items() for suffix in suffixes.values()}
# A case folder holds at least one file named <case>_<suffix> or <case>-<suffix> of either naming.
_CASE_FILE = re.compile(rf"[-_](?P<suffix>{'|'.join(sorted(_SUFFIX_NAMING, key=len, reverse=True))}|seg)"
                        r"\.nii(\.gz)?$", re.IGNORECASE)


def _modality_file(case: Path, suffix: str) -> Path | None:
    """``<case>/<anything>[_-]<suffix>.nii[.gz]`` (case-insensitive), or None."""
    pattern = re.compile(rf"[-_]{suffix}\.nii(\.gz)?$", re.IGNORECASE)
    matches = sorted(p for p in case.iterdir() if pattern.search(p.name))
    if len(matches) > 1:
        raise DataError(f"{case}: several {suffix} images: {[p.name for p in matches]}")
    return matches[0] if matches else None


def _segmentation_file(case: Path) -> Path | None:
    """The case's label file, found by name *within the case folder* (never by zipping sorted
    lists): ``<case>_seg.nii.gz`` (``<case>-seg.nii.gz`` from 2023), or else the one NIfTI file
    whose name holds "seg" (one BraTS 2020 case ships ``W39_1998.09.19_Segm.nii``)."""
    candidates = sorted(p for p in case.iterdir() if _NIFTI.search(p.name) and "seg" in p.name.lower())
    exact = [p for p in candidates if _NIFTI.sub("", p.name).lower() in (f"{case.name.lower()}_seg",
                                                                         f"{case.name.lower()}-seg")]
    if exact:
        return exact[0]
    if len(candidates) > 1:
        raise DataError(f"{case}: several possible segmentations: {[p.name for p in candidates]}")
    return candidates[0] if candidates else None


def _no_cases(folder: Path) -> NoSubjectsFound:
    return NoSubjectsFound(f"{folder}: no BraTS cases found (expected <case>/<case>_flair.nii.gz or, from 2023, "
                           "<case>/<case>-t2f.nii.gz, ...)")


def case_namings(folder: Path) -> dict[Path, str]:
    """Every case folder under ``folder`` (searched recursively) -> its naming (a key of
    :data:`NAMINGS`), in natural order; a case whose files mix the two namings is an error."""
    found: dict[Path, set[str]] = {}
    for path in folder.rglob("*"):
        match = _CASE_FILE.search(path.name)
        if match and path.is_file():
            namings = found.setdefault(path.parent, set())
            if match["suffix"].lower() != "seg":
                namings.add(_SUFFIX_NAMING[match["suffix"].lower()])
    mixed = [case for case, namings in found.items() if len(namings) > 1]
    if mixed:
        raise DataError(f"{mixed[0]}: mixes the 2018-2021 file names (_t1, _t1ce, _t2, _flair) with 2023's "
                        "(-t1n, -t1c, -t2w, -t2f)")
    cases = {case: next(iter(namings)) for case, namings in found.items() if namings}  # a lone seg is no case
    return dict(sorted(cases.items(), key=lambda item: natural_key(item[0].name)))


class BraTSDataModule(VolumeSegmentationDataModule):
    """BraTS training (or validation) folders as shipped, 2018 to 2021 and 2023 on.

    ``data_dir`` is searched recursively for case folders, so ``MICCAI_BraTS_2018_Data_Training``
    (cases under ``HGG/`` and ``LGG/``), ``MICCAI_BraTS2020_TrainingData`` (flat
    ``BraTS20_Training_NNN/``), the 2021 ``BraTS2021_NNNNN/`` and the 2023 on
    ``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-00000-000/`` folders all work. The
    case id is the folder name; each image and the segmentation are matched within the case folder.
    The modalities keep their names in both namings: T1 (``t1``/``t1n``), T1ce (``t1ce``/``t1c``),
    T2 (``t2``/``t2w``), FLAIR (``flair``/``t2f``).

    Label values (written back the same):

    - ``brats`` (2018-2021): 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing tumour; no 3.
    - ``brats2023`` (2023 on: GLI, SSA, MEN, MET): 1 NETC, 2 SNFH, 3 ET.
    - ``brats_post_treatment`` (2024 post-treatment glioma): 2023's and 4, the resection cavity.

    Args:
        region_based: train one sigmoid output per evaluated region, whole tumour (NCR, oedema,
            ET), tumour core (NCR, ET) and enhancing tumour (and the resection cavity, post
            treatment), and report their Dice; otherwise softmax over the classes.
        label_convention: one of the above, or ``auto``: the one of the folder's file names
            (``brats`` for ``_flair``, ``brats2023`` for ``-t2f``; post-treatment data names its
            files as 2023 does and is given by name).
        **kwargs: everything :class:`VolumeSegmentationDataModule` takes.
    """

    available_modalities = tuple(NAMINGS["2018-2021"])  # the same names in both namings
    hints_subfolders = False  # cases are found anywhere below data_dir

    def __init__(self, data_dir: str, region_based: bool = False,
                 label_convention: Literal["auto", "brats", "brats2023", "brats_post_treatment"] = "auto",
                 **kwargs: Any) -> None:
        if label_convention != "auto" and label_convention not in BRATS_CONVENTIONS:
            raise ValueError(f"label_convention must be auto or one of {list(BRATS_CONVENTIONS)}, "
                             f"got {label_convention!r}")
        self.region_based = region_based
        self.label_convention = label_convention
        self._cases: dict[Path, dict[Path, str]] = {}  # folder -> its cases and their naming, read once
        self._convention: str | None = None
        super().__init__(data_dir, **kwargs)

    def cases(self, folder: Path) -> dict[Path, str]:
        """:func:`case_namings` of ``folder``, read once."""
        if folder not in self._cases:
            self._cases[folder] = case_namings(folder)
        return self._cases[folder]

    @property
    def convention(self) -> str:
        """The label convention in use: as given, or that of the file names of ``data_dir``
        (``predict_dir`` when only that exists); decided once."""
        if self._convention is None:
            folder = next((f for f in (self.data_dir, self.predict_dir) if f is not None and f.is_dir()),
                          self.data_dir)
            namings = set(self.cases(folder).values()) if folder.is_dir() else set()
            if len(namings) > 1:
                raise DataError(f"{folder}: holds cases of both BraTS namings (2018-2021 _flair and 2023 -t2f), "
                                "whose label values differ (enhancing tumour 4 against 3); give each release a "
                                "folder of its own")
            named = NAMING_CONVENTION[next(iter(namings))] if namings else None
            if self.label_convention == "auto":
                if named is None:
                    raise _no_cases(folder)
                self._convention = named
            else:
                if named is not None and (named == "brats") != (self.label_convention == "brats"):
                    rank_zero_warn(f"{folder}: label_convention {self.label_convention} given for cases named as "
                                   f"BraTS {'2018-2021' if named == 'brats' else '2023 on'} names them (convention "
                                   f"{named}): their label values are read as {self.label_convention} says",
                                   category=DataWarning)
                self._convention = self.label_convention
        return self._convention

    @property
    def label_space(self) -> LabelSpace:
        classes, regions = BRATS_CONVENTIONS[self.convention]
        space = regions if self.region_based else classes
        hint = OTHER_CONVENTION_HINTS.get(self.convention)
        return replace(space, unknown_values_hint=hint) if hint else space

    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        cases = self.cases(folder)
        if not cases:
            raise _no_cases(folder)
        seen: dict[str, Path] = {}
        subjects = []
        for case, naming in cases.items():
            if case.name in seen:
                raise DataError(f"{case}: case id {case.name} also in {seen[case.name]}")
            seen[case.name] = case
            separator = "_" if naming == "2018-2021" else "-"
            images = []
            for modality in self.modalities:
                suffix = NAMINGS[naming][modality]
                path = _modality_file(case, suffix)
                if path is None:
                    raise DataError(f"{case}: no {modality} image ({case.name}{separator}{suffix}.nii.gz)")
                images.append(path)
            label = _segmentation_file(case) if require_labels else None
            if require_labels and label is None:
                raise DataError(f"{case}: case {case.name} has no segmentation ({case.name}{separator}seg.nii.gz)")
            subjects.append(Subject(case.name, tuple(images), label))
        return subjects
