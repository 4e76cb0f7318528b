"""An iSeg-layout folder (the demo's) as an nnU-Net v2 raw dataset, to compare plans and trainings.

    python -m benchmarks.nnunet_dataset data/demo/iSeg-2017-Training $nnUNet_raw --subjects 1 2 3 4 5 6 7 8
    nnUNetv2_extract_fingerprint -d 1 && nnUNetv2_plan_experiment -d 1     # nnunetv2 in its own venv

Writes ``Dataset001_Demo/{imagesTr,labelsTr,imagesTs,dataset.json}``: T1 as channel 0000, T2 as 0001 (NIfTI,
the Analyze files' own affine), labels mapped to consecutive classes (iSeg's 10/150/250 -> 1/2/3)
by the dataset's label space. The subjects default to the demo's 8 outside its test set, the ones
``plan.py`` reads. Test subjects go to ``imagesTs``, and their labels, where the source has them,
to ``labelsTs`` (nnU-Net ignores it; ``evaluate.py --gt`` scores predictions against it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from core.dataset_labels import ISEG
from core.io import load_volume


def write_images(source: Path, subject: str, folder: Path) -> None:
    """One subject's T1 and T2 as nnU-Net's ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``."""
    for channel, modality in enumerate(("T1", "T2")):
        data, affine = load_volume(source / f"subject-{subject}-{modality}.hdr")
        nib.save(nib.Nifti1Image(data, affine), folder / f"subject-{subject}_{channel:04d}.nii.gz")


def write_label(source: Path, subject: str, path: Path) -> None:
    """One subject's iSeg label map as nnU-Net's consecutive classes."""
    label, affine = load_volume(source / f"subject-{subject}-label.hdr")
    classes = ISEG.encode(np.rint(label).astype(np.int64)).astype(np.uint8)
    nib.save(nib.Nifti1Image(classes, affine), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="an iSeg-2017-Training-layout folder")
    parser.add_argument("raw", type=Path, help="nnU-Net's raw folder ($nnUNet_raw)")
    parser.add_argument("--subjects", nargs="+", default=[str(n) for n in range(1, 9)])
    parser.add_argument("--test-subjects", nargs="*", default=[], help="images (no labels) for imagesTs")
    parser.add_argument("--name", default="Dataset001_Demo")
    args = parser.parse_args(argv)
    out = args.raw / args.name
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out}: exists and is not empty; refusing to write into it (choose another --name)")
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for n in args.test_subjects:
        write_images(args.source, n, out / "imagesTs")
        if (args.source / f"subject-{n}-label.hdr").is_file():
            (out / "labelsTs").mkdir(exist_ok=True)
            write_label(args.source, n, out / "labelsTs" / f"subject-{n}.nii.gz")
    for n in args.subjects:
        write_images(args.source, n, out / "imagesTr")
        write_label(args.source, n, out / "labelsTr" / f"subject-{n}.nii.gz")
    labels = dict(zip(ISEG.class_names, range(ISEG.num_classes), strict=True))
    description = {"channel_names": {"0": "T1", "1": "T2"}, "labels": labels, "numTraining": len(args.subjects),
                   "file_ending": ".nii.gz"}
    (out / "dataset.json").write_text(json.dumps(description, indent=1))
    print(f"wrote {len(args.subjects)} cases to {out}")


if __name__ == "__main__":
    main()
