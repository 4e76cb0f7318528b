"""BIDS without pybids: subject[_session] ids, ``dseg.tsv`` label tables, derivative folders
(read by ``evaluate.py``, written by :class:`BIDSOutputNames` through the prediction folder)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from core.export import PREDICTION_MARK, REPOSITORY, OutputNames
from core.io import DataError, DataWarning
from core.labels import LabelSpace
from core.metrics import SCORE_FILES, SCORING_RECORD
from core.provenance import code_version

DERIVATIVE_NAME = "brain-mri-segmentation"
_UNIT_FILE = r"^(sub-[a-zA-Z0-9]+)(?:_(ses-[a-zA-Z0-9]+))?(?:_[a-z]+-[a-zA-Z0-9]+)*_{suffix}\.nii(?:\.gz)?$"
BRAIN_MASK_ENTITIES = {"desc": "brain", "space": None}  # fMRIPrep's native-space mask, SynthStrip's as BIDS names it


def unit_id(subject: str, session: str | None) -> str:
    """``sub-01_ses-1``, or ``sub-01`` for a dataset without sessions."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def unit_parts(subject_id: str) -> tuple[str, str | None]:
    """The inverse of :func:`unit_id`: ``("01", "1")``."""
    match = re.fullmatch(r"sub-([a-zA-Z0-9]+)(?:_ses-([a-zA-Z0-9]+))?", subject_id)
    if not match:
        raise DataError(f"{subject_id!r} is not a BIDS subject[_session] id (sub-01, sub-01_ses-1)")
    return match[1], match[2]


ENTITIES = {"acq": "acquisition", "ce": "ceagent", "rec": "reconstruction", "dir": "direction", "run": "run",
            "echo": "echo", "part": "part", "inv": "inversion", "mt": "mt", "space": "space", "res": "resolution",
            "den": "density", "label": "label", "desc": "desc"}
"""The BIDS entities an anatomical image or label map may carry after ``sub``/``ses``, in the
order file names hold them: file-name key -> pybids' name."""
ENTITY_ORDER = tuple(ENTITIES)


def dseg_tables(folder: Path, entities: Mapping[str, str | None] | None = None) -> list[Path]:
    """Where the lookup table of a pipeline's ``*_dseg`` files with these entities (file-name
    keys, ``{"desc": "aseg"}``) may be, most specific first, by BIDS' inheritance principle:
    ``desc-aseg_dseg.tsv`` at the pipeline's top (as fMRIPrep writes it), then ``dseg.tsv``."""
    given = sorted(((k, v) for k, v in (entities or {}).items() if v is not None),
                   key=lambda item: ENTITY_ORDER.index(item[0]) if item[0] in ENTITY_ORDER else len(ENTITY_ORDER))
    names = ["_".join(f"{k}-{v}" for k, v in chosen) + "_dseg.tsv"
             for size in range(len(given), 0, -1) for chosen in itertools.combinations(given, size)]
    return [Path(folder) / name for name in [*names, "dseg.tsv"]]


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


def dataset_root(path: Path) -> Path | None:
    """The BIDS dataset ``path`` lies in: the nearest folder above it with a
    ``dataset_description.json`` (symbolic links, as DataLad makes them, are not followed)."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / "dataset_description.json").is_file():
            return folder
    return None


def _link(root: Path, directory: Path) -> str:
    """Where ``root`` is, as seen from the derivative ``directory``: a relative path when the
    derivative lies inside it (``<dataset>/derivatives/<name>``: ``../..``) or inside the dataset
    that holds it (a sibling derivative: ``../prep``), so that the link moves with the dataset;
    else a file URI."""
    root, directory = Path(os.path.abspath(root)), Path(os.path.abspath(directory))
    if directory.is_relative_to(dataset_root(root) or root):  # the holding dataset contains root itself
        return Path(os.path.relpath(root, directory)).as_posix()
    return root.as_uri()


def _linked_root(link: str, directory: Path) -> Path:
    """The folder a ``DatasetLinks`` value names (the inverse of :func:`_link`)."""
    if link.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(link).path))
    return Path(os.path.normpath(Path(os.path.abspath(directory)) / link))


@dataclass(frozen=True)
class BIDSOutputNames(OutputNames):
    """Predictions as a BIDS derivative: ``sub-*/[ses-*/]anat/sub-*_[ses-*_]space-orig_dseg.nii.gz``
    (``_probseg`` for the probabilities), each with a JSON sidecar (``Sources``: the input
    images as BIDS URIs; ``Description``: the checkpoints; ``Manual: false``), ``volumes.tsv``,
    and at the top ``dseg.tsv``,
    ``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy`` with the code's
    version and commit, ``DatasetLinks`` to the input datasets that the URIs name) and
    ``.bidsignore``: the files BIDS has no name for, ``volumes.tsv``, the log of prediction runs and
    ``evaluate.py``'s scores when they are written here, kept out of the BIDS validator's way."""

    segmentation: str = "{folder}/{subject}_space-orig_dseg.nii.gz"
    probabilities: str = "{folder}/{subject}_space-orig_probseg.nii.gz"
    volumes: str = "volumes.tsv"

    def of_contrast(self, contrast: str) -> BIDSOutputNames:
        """The names of a model of any contrast segmenting the ``contrast`` images (a BIDS
        suffix, maybe after entities): ``..._space-orig_desc-T2w_dseg.nii.gz``, so that the
        segmentations of a session's T1w and T2w lie side by side (``evaluate.py
        --pred-entities desc=T2w`` picks one)."""
        desc = re.sub(r"[^a-zA-Z0-9]", "", contrast)  # a BIDS label: alphanumeric
        return replace(self, segmentation=f"{{folder}}/{{subject}}_space-orig_desc-{desc}_dseg.nii.gz",
                       probabilities=f"{{folder}}/{{subject}}_space-orig_desc-{desc}_probseg.nii.gz")

    def files(self, subject_id: str, probabilities: bool = False) -> list[str]:
        subject, session = unit_parts(subject_id)
        folder = f"sub-{subject}" + (f"/ses-{session}" if session else "") + "/anat"
        return [self.segmentation.format(folder=folder, subject=subject_id),
                *([self.probabilities.format(folder=folder, subject=subject_id)] if probabilities else [])]

    def image_sidecars(self, subject_id: str, probabilities: bool = False) -> list[str]:
        return [name.removesuffix(".nii.gz") + ".json" for name in self.files(subject_id, probabilities)]

    def links(self, sources: Sequence[Path], directory: Path) -> dict[str, str]:
        """``raw`` (``raw2``, ... for more than one; ``input`` for a derivative dataset) -> where
        each dataset the ``sources`` lie in is. An existing ``dataset_description.json`` is kept:
        a key it already has for the same dataset is used again, and a dataset it has no key for is
        said before any work, since the new sidecars' URIs then cannot be resolved from it."""
        described = Path(directory) / "dataset_description.json"
        try:
            kept = json.loads(described.read_text(encoding="utf-8")).get("DatasetLinks") or {}
        except FileNotFoundError:
            kept = None
        except (OSError, ValueError, AttributeError):
            kept = {}
        links: dict[str, str] = {}
        for root in dict.fromkeys(r for r in map(dataset_root, sources) if r is not None):
            same = [key for key, link in (kept or {}).items()
                    if isinstance(link, str) and _linked_root(link, directory) == root]
            if same:
                links[same[0]] = kept[same[0]]
                continue
            base = "input" if is_derivative(root) else "raw"
            key = next(k for k in (base, *(f"{base}{n}" for n in range(2, 10_000)))
                       if k not in links and k not in (kept or {}))
            links[key] = _link(root, directory)
            if kept is not None:
                warnings.warn(f"{described}: kept as it is, but it has no DatasetLinks entry for {root}; the new "
                              f"sidecars name its files bids:{key}:..., which it cannot resolve (write into a new "
                              "folder to get one)", DataWarning, stacklevel=2)
        return links

    def describe_image(self, sources: Sequence[Path], directory: Path, links: Mapping[str, str],
                       note: str = "", model: str = "") -> str:
        roots = {_linked_root(link, directory): key for key, link in links.items()}
        uris = []
        for source in sources:
            root = dataset_root(source)
            if root in roots:
                uris.append(f"bids:{roots[root]}:{Path(os.path.relpath(os.path.abspath(source), root)).as_posix()}")
        by = f"the network of {model}" if model else "a trained network"
        description = f"{PREDICTION_MARK.decode()} (automated, by {by})" + (f"; {note}" if note else "")
        sidecar = {"Description": description, "Manual": False, **({"Sources": uris} if uris else {})}
        return json.dumps(sidecar, indent=2) + "\n"

    def sidecars(self, labels: LabelSpace, links: Mapping[str, str] | None = None) -> dict[str, str]:
        table = io.StringIO()
        table.write("index\tname\n")
        for value, name in zip(labels.class_values, labels.class_names, strict=True):
            table.write(f"{value}\t{name}\n")
        code = code_version(REPOSITORY)
        commit = f"git commit {code['commit']}" + (" with uncommitted changes" if code["dirty"] else "")
        generated_by = {"Name": DERIVATIVE_NAME, "Version": package_version(),
                        "Description": commit if code["commit"] else "outside a git checkout"}
        description = {"Name": f"{DERIVATIVE_NAME} segmentations", "BIDSVersion": "1.9.0",
                       "DatasetType": "derivative", "GeneratedBy": [generated_by],
                       **({"DatasetLinks": dict(links)} if links else {})}
        ignored = "".join(f"/{name}\n" for name in (self.volumes, self.log, *SCORE_FILES, SCORING_RECORD))  # gitignore
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


def file_entities(name: str) -> dict[str, str]:
    """The entities a BIDS file name carries after ``sub``/``ses``, by file-name key:
    ``sub-01_ses-1_space-MNI_desc-aseg_dseg.nii.gz`` -> ``{"space": "MNI", "desc": "aseg"}``."""
    parts = name.split(".", 1)[0].split("_")[:-1]  # the suffix (dseg) and extensions dropped
    pairs = dict(part.split("-", 1) for part in parts if "-" in part)
    return {key: value for key, value in pairs.items() if key not in ("sub", "ses")}


def derivative_files(folder: Path, entities: Mapping[str, str | None] | None = None,
                     suffix: str = "dseg") -> dict[str, Path]:
    """``sub-01_ses-1`` -> its ``*_<suffix>.nii[.gz]`` in a derivative folder (``dseg``: label
    maps; ``mask``: brain masks), among those with ``entities`` (file-name keys; ``None``: the
    entity absent), as a pipeline with several per session needs (fMRIPrep's ``{"desc": "aseg"}``);
    two for one session are an error naming both. A file without a session is keyed ``sub-01``.
    Only ``anat/`` folders are read (fMRIPrep's ``func/`` holds BOLD-space masks of the same name)."""
    pattern = re.compile(_UNIT_FILE.format(suffix=re.escape(suffix)))
    what = "label maps" if suffix == "dseg" else f"{suffix} files"
    found: dict[str, Path] = {}
    anatomical = [path for where in ("sub-*/anat", "sub-*/ses-*/anat")  # not func/, fMRIPrep's BOLD-space ones
                  for path in Path(folder).glob(f"{where}/*_{suffix}.nii*")]
    for path in sorted(anatomical):
        match = pattern.match(path.name)
        if not match:
            continue
        carried = file_entities(path.name)
        if any(carried.get(key) != (None if value is None else str(value)) for key, value in (entities or {}).items()):
            continue
        subject_id = match[1] + (f"_{match[2]}" if match[2] else "")
        if subject_id in found:
            raise DataError(f"{folder}: two {what} for {subject_id}: {found[subject_id].name}, {path.name}")
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
