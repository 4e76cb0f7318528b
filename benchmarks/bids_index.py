"""How long does a large BIDS dataset take to list? ``BIDSDataModule.find_subjects`` on a tree
of empty files (the names are all pybids and the DataModule read), seconds per participant count.

    python -m benchmarks.bids_index [--participants 100 500] [--sessions 2]

Each participant gets ``--sessions`` sessions, each with ``T1w``, ``T2w`` and ``FLAIR`` images
and their JSON sidecars, and a ``*_dseg`` label map in ``derivatives/manual``: 7 files per
session. The DataModule reads ``[T1w, T2w]`` with the labels, as training does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from datamodules.bids import BIDSDataModule

DERIVATIVE = {"Name": "manual", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
              "GeneratedBy": [{"Name": "manual"}]}


def write_tree(root: Path, participants: int, sessions: int) -> Path:
    """The empty-file BIDS tree described in the module's docstring."""
    labels = root / "derivatives" / "manual"
    labels.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"}))
    (labels / "dataset_description.json").write_text(json.dumps(DERIVATIVE))
    (labels / "dseg.tsv").write_text("index\tname\n1\tCSF\n2\tGM\n3\tWM\n")
    for number in range(1, participants + 1):
        for session in range(1, sessions + 1):
            unit, folder = f"sub-{number:04d}_ses-{session}", f"sub-{number:04d}/ses-{session}/anat"
            (root / folder).mkdir(parents=True)
            (labels / folder).mkdir(parents=True)
            for suffix in ("T1w", "T2w", "FLAIR"):
                (root / folder / f"{unit}_{suffix}.nii.gz").touch()
                (root / folder / f"{unit}_{suffix}.json").write_text('{"RepetitionTime": 2.3}')
            (labels / folder / f"{unit}_dseg.nii.gz").touch()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--sessions", type=int, default=2)
    args = parser.parse_args()
    print("| participants | sessions | files | find_subjects (s) |\n|---:|---:|---:|---:|")
    for participants in args.participants:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_tree(Path(tmp) / "bids", participants, args.sessions)
            files = sum(1 for path in root.rglob("*") if path.is_file())
            module = BIDSDataModule(str(root), modalities=["T1w", "T2w"], labels_dir="derivatives/manual",
                                    cache_dir=None)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pybids' own deprecation notes
                found = module.find_subjects(root, require_labels=True)
            seconds = time.perf_counter() - start
            print(f"| {participants} | {len(found)} | {files} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
