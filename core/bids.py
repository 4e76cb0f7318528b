"""BIDS without pybids: subject[_session] ids, ``dseg.tsv`` label tables, derivative folders
(read by ``evaluate.py``, written by :class:`BIDSOutputNames` through the prediction folder)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.export import OutputNames
from core.io import DataError
from core.labels import LabelSpace
from core.metrics import SCORE_FILES
from core.provenance import code_version

DERIVATIVE_NAME = "brain-mri-segmentation"
REPOSITORY = Path(__file__).resolve().parents[1]
_DSEG = re.compile(r"^(sub-[a-zA-Z0-9]+)(?:_(ses-[a-zA-Z0-9]+))?(?:_[a-z]+-[a-zA-Z0-9]+)*_dseg\.nii(?:\.gz)?$")


def unit_id(subject: str, session: str | None) -> str:
    """``sub-01_ses-1``, or ``sub-01`` for a dataset without sessions."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def unit_parts(subject_id: str) -> tuple[str, str | None]:
    """The inverse of :func:`unit_id`: ``("01", "1")``."""
    match = re.fullmatch(r"sub-([a-zA-Z0-9]+)(?:_ses-([a-zA-Z0-9]+))?", subject_id)
    if not match:
        raise DataError(f"{subject_id!r} is not a BIDS subject[_session] id (sub-01, sub-01_ses-1)")
    return match[1], match[2]


def read_dseg_tsv(path: Path) -> dict[int, str]:
    """A ``dseg.tsv`` lookup table (columns ``index``, ``name``) as value -> name, background 0
    added when the table does not list it."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (a derivatives pipeline with *_dseg files describes their values "
                        "in dseg.tsv: columns index and name)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"index", "name"} <= set(rows[0]):
        raise DataError(f"{path}: needs tab-separated columns 'index' and 'name'")
    try:
        values = {int(row["index"]): row["name"] for row in rows}
    except ValueError as error:
        raise DataError(f"{path}: an index is not an integer ({error})") from error
    return dict(sorted({0: "background", **values}.items()))


@dataclass(frozen=True)
class BIDSOutputNames(OutputNames):
    """Predictions as a BIDS derivative: ``sub-*/[ses-*/]anat/sub-*_[ses-*_]space-orig_dseg.nii.gz``
    (``_probseg`` for the probabilities), ``volumes.tsv``, and at the top ``dseg.tsv``,
    ``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy`` with the code's
    version and commit) and ``.bidsignore``: the tables BIDS has no name for, ``volumes.tsv`` and
    ``evaluate.py``'s scores when they are written here, kept out of the BIDS validator's way."""

    segmentation: str = "{folder}/{subject}_space-orig_dseg.nii.gz"
    probabilities: str = "{folder}/{subject}_space-orig_probseg.nii.gz"
    volumes: str = "volumes.tsv"

    def files(self, subject_id: str, probabilities: bool = False) -> list[str]:
        subject, session = unit_parts(subject_id)
        folder = f"sub-{subject}" + (f"/ses-{session}" if session else "") + "/anat"
        return [self.segmentation.format(folder=folder, subject=subject_id),
                *([self.probabilities.format(folder=folder, subject=subject_id)] if probabilities else [])]

    def sidecars(self, labels: LabelSpace) -> dict[str, str]:
        table = io.StringIO()
        table.write("index\tname\n")
        for value, name in zip(labels.class_values, labels.class_names, strict=True):
            table.write(f"{value}\t{name}\n")
        code = code_version(REPOSITORY)
        commit = f"git commit {code['commit']}" + (" with uncommitted changes" if code["dirty"] else "")
        generated_by = {"Name": DERIVATIVE_NAME, "Version": package_version(),
                        "Description": commit if code["commit"] else "outside a git checkout"}
        description = {"Name": f"{DERIVATIVE_NAME} segmentations", "BIDSVersion": "1.9.0",
                       "DatasetType": "derivative", "GeneratedBy": [generated_by]}
        ignored = "".join(f"/{name}\n" for name in (self.volumes, *SCORE_FILES))  # gitignore syntax: at the top
        return {"dseg.tsv": table.getvalue(), "dataset_description.json": json.dumps(description, indent=2) + "\n",
                ".bidsignore": ignored}


BIDS_NAMES = BIDSOutputNames()


def is_derivative(folder: Path) -> bool:
    """Whether ``folder`` is a BIDS derivative dataset (``DatasetType: derivative``)."""
    try:
        description = json.loads((Path(folder) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(description, dict) and description.get("DatasetType") == "derivative"


def derivative_files(folder: Path) -> dict[str, Path]:
    """``sub-01_ses-1`` -> its ``*_dseg.nii[.gz]`` in a derivative folder (two for one session
    are an error naming both)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).glob("sub-*/**/*_dseg.nii*")):
        match = _DSEG.match(path.name)
        if not match:
            continue
        subject_id = match[1] + (f"_{match[2]}" if match[2] else "")
        if subject_id in found:
            raise DataError(f"{folder}: two label maps for {subject_id}: {found[subject_id].name}, {path.name}")
        found[subject_id] = path
    return found


def package_version() -> str:
    """This code's version: the installed package's, else the checkout's ``pyproject.toml``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DERIVATIVE_NAME)
    except PackageNotFoundError:
        import tomllib

        try:
            return str(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"
