"""Segment new scans with a trained checkpoint: ``python predict.py --checkpoint C --input ... --output D``.

The checkpoint is all it needs: the model stores its network, modalities (names and order),
classes, the dataset's own label values and window size; the DataModule's saved arguments
give the preprocessing and the folder layout. ``--input`` is either one subject's modality
files, in the checkpoint's modality order, or a folder in the layout the model was trained on
(e.g. ``iSeg-2017-Testing/``, a BraTS validation folder, a Decathlon task folder).

For each subject it writes ``<subject>_seg.nii.gz`` in the scan's own space (shape, affine,
orientation) and label values, optionally ``<subject>_probabilities.nii.gz`` (one volume per
class or region, float32), and finally ``volumes.csv``: millilitres per class (or region) per
subject. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.io import DataError
from datamodules.volumes import PreprocessingSettings, Subject, load_subject
from lightning_modules import SegmentationModule
from lightning_modules.callbacks import save_nifti_atomically, to_scan_space, write_segmentation, write_volumes_csv
from lightning_modules.inference import classes_from, probabilities, structure_volumes

# The arguments of a saved DataModule that describe a training split, not a folder's layout.
_SPLIT_ARGS = ("val_subjects", "test_subjects", "train_subjects", "val_fraction", "test_fraction", "num_folds",
               "fold", "predict_dir", "augmentation")


def load_checkpoint(path: Path, device: str = "cpu", **overrides: Any) -> tuple[SegmentationModule, dict[str, Any]]:
    """The model (eval mode) and the checkpoint's DataModule record (class and arguments)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: checkpoint not found")
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    model = SegmentationModule.load_from_checkpoint(str(path), map_location=device, **overrides).eval()
    data = {"class_path": checkpoint.get("datamodule_class"),
            "init_args": dict(checkpoint.get("datamodule_hyper_parameters") or {})}
    return model, data


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".hdr", ".img", ".mha", ".nrrd"):
        name = name.removesuffix(suffix)
    return name


def subjects_from_files(files: Sequence[Path], modalities: Sequence[str], checkpoint: Path,
                        subject_id: str | None = None) -> list[Subject]:
    """One subject from its modality files, given in the checkpoint's modality order. Its id
    (the output's name) defaults to what the file names share, up to a separator
    (``subject-4-T1.hdr`` + ``subject-4-T2.hdr`` -> ``subject-4``)."""
    if len(files) != len(modalities):
        raise DataError(f"{checkpoint}: the model was trained on {len(modalities)} modalities {list(modalities)} "
                        f"(in this order); got {len(files)} files: {[str(f) for f in files]}")
    if subject_id is None:
        stems = [_stem(f) for f in files]
        shared = os.path.commonprefix(stems)
        if len(stems) > 1 and any(c in shared for c in "-_."):  # cut the shared part of the modality names
            shared = shared[: max(shared.rfind(c) for c in "-_.")]
        subject_id = shared.rstrip("-_.") or stems[0]
    return [Subject(subject_id, tuple(Path(f) for f in files))]


def subjects_from_folder(folder: Path, data: dict[str, Any], modalities: Sequence[str],
                         checkpoint: Path) -> list[Subject]:
    """Every subject of ``folder``, read by the DataModule the model was trained with."""
    if not data["class_path"]:
        raise DataError(f"{checkpoint}: records no DataModule; give the modality files instead of a folder")
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    module, _, name = data["class_path"].rpartition(".")
    datamodule_class = getattr(importlib.import_module(module), name)
    args = {k: v for k, v in data["init_args"].items() if k not in _SPLIT_ARGS and not k.startswith("_")}
    args.update(data_dir=str(folder), cache_dir=None)
    try:
        datamodule = datamodule_class(**args)
    except ValueError as error:  # e.g. a Decathlon task whose dataset.json lacks a modality
        raise DataError(f"{folder}: cannot provide the modalities {list(modalities)} that {checkpoint} was "
                        f"trained on ({error})") from error
    if list(datamodule.modalities) != list(modalities):
        raise DataError(f"{folder}: offers modalities {list(datamodule.modalities)}, {checkpoint} was trained on "
                        f"{list(modalities)}")
    return datamodule.find_subjects(folder, require_labels=False)


def predict(checkpoint: Path, inputs: Sequence[Path], output: Path, device: str = "cpu", overlap: float | None = None,
            sw_batch_size: int | None = None, flips: bool = False, save_probabilities: bool = False,
            subject_id: str | None = None) -> list[Path]:
    """Segment every subject of ``inputs``; returns the segmentation files written."""
    overrides = {k: v for k, v in (("sw_overlap", overlap), ("sw_batch_size", sw_batch_size)) if v is not None}
    model, data = load_checkpoint(checkpoint, device, **overrides)
    modalities = list(model.hparams.modalities or [])
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        subjects = subjects_from_folder(Path(inputs[0]), data, modalities, checkpoint)
    else:
        subjects = subjects_from_files(inputs, modalities, checkpoint, subject_id)
    settings = PreprocessingSettings.from_hparams(data["init_args"])
    values = model.hparams.label_values or list(range(model.hparams.num_classes))
    output.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for subject in subjects:
        volume = load_subject(subject, None, settings)
        image = torch.from_numpy(np.asarray(volume.image, dtype=np.float32))[None].to(device)
        probs = probabilities(model, image, flips)
        classes = classes_from(model, probs)[0].cpu().numpy()
        grids = {"affine": volume.affine, "original_affine": volume.original_affine,
                 "original_shape": volume.original_shape}
        path = write_segmentation(classes, values, output / f"{subject.subject_id}_seg.nii.gz", **grids)
        written.append(path)
        scan_classes, scan_affine = to_scan_space(classes, **grids)
        rows.append({"subject": subject.subject_id, **structure_volumes(scan_classes, scan_affine, model)})
        if save_probabilities:
            maps, affine = to_scan_space(probs[0].cpu().numpy(), **grids, order=1)
            save_nifti_atomically(np.moveaxis(maps, 0, -1).astype(np.float32), affine,
                                  output / f"{subject.subject_id}_probabilities.nii.gz")
        print(f"wrote {path}")
    write_volumes_csv(rows, output / "volumes.csv")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--input", type=Path, nargs="+", required=True,
                        help="one subject's modality files (checkpoint order) or a dataset folder")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--subject", help="output name for modality-file input (default: the files' shared name)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the checkpoint's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the checkpoint's)")
    parser.add_argument("--flips", action="store_true", help="test-time augmentation: mean over 8 mirrorings")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    args = parser.parse_args(argv)
    try:
        predict(args.checkpoint, args.input, args.output, args.device, args.overlap, args.sw_batch_size,
                args.flips, args.probabilities, args.subject)
    except DataError as error:
        parser.exit(2, f"predict.py: error: {error}\n")


if __name__ == "__main__":
    main()
