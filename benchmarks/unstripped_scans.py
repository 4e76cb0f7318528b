"""A trained model on scans that are not skull-stripped, with and without their brain masks: the
demo's test subjects 9 and 10 written as a BIDS dataset whose scans have a head around the brain
(``demo.real_bids.with_head``: dark bone, bright scalp, noise in the air), their brain masks in
``derivatives/synthstrip`` and their labels in ``derivatives/manual``; then ``predict.py`` as the
scans are and with ``--brain-mask``, each scored by ``evaluate.py`` against the labels.

    python -m benchmarks.unstripped_scans --checkpoint runs/demo/latest/checkpoints/best.ckpt --out /tmp/u

Prints the Dice per tissue of both runs as a Markdown table (the masked run gives the model's
own test scores back: the masked scans are the stripped ones, voxel for voxel).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from core.io import save_nifti_atomically

TISSUES = {1: "CSF", 2: "GM", 3: "WM"}
SUBJECTS = (9, 10)


def build(data: Path, out: Path, spacing: float = 2.0) -> Path:
    """The BIDS dataset of the demo's ``SUBJECTS`` (T1w, T2w with a head; masks; labels)."""
    from demo.real_bids import with_head

    rng = np.random.default_rng(0)
    for folder, kind in ((out, "raw"), (out / "derivatives" / "manual", "derivative"),
                         (out / "derivatives" / "synthstrip", "derivative")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset_description.json").write_text(json.dumps(
            {"Name": folder.name, "BIDSVersion": "1.9.0", "DatasetType": kind,
             **({"GeneratedBy": [{"Name": "benchmarks.unstripped_scans"}]} if kind == "derivative" else {})}))
    (out / "derivatives" / "manual" / "dseg.tsv").write_text(
        "index\tname\n" + "".join(f"{v}\t{n}\n" for v, n in TISSUES.items()))
    for n in SUBJECTS:
        scans = {m: nib.load(data / f"subject-{n}-{m}.hdr") for m in ("T1", "T2")}
        arrays = {m: np.asarray(s.dataobj).reshape(s.shape[:3]) for m, s in scans.items()}
        affine, brain = scans["T1"].affine, (arrays["T1"] != 0) | (arrays["T2"] != 0)
        anat = Path(f"sub-{n:02d}") / "anat"
        for modality, array in arrays.items():
            _save(with_head(array, brain, spacing, rng), affine, out / anat / f"sub-{n:02d}_{modality}w.nii.gz")
        _save(brain.astype(np.uint8), affine,
              out / "derivatives" / "synthstrip" / anat / f"sub-{n:02d}_desc-brain_mask.nii.gz")
        label = np.asarray(nib.load(data / f"subject-{n}-label.hdr").dataobj).reshape(brain.shape)
        _save(np.select([label == 10, label == 150, label == 250], [1, 2, 3], 0).astype(np.uint8), affine,
              out / "derivatives" / "manual" / anat / f"sub-{n:02d}_dseg.nii.gz")
    return out


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    save_nifti_atomically(nib.Nifti1Image(array, affine), path)  # its folder made too


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a model of the demo's T1 + T2 scans")
    parser.add_argument("--data", type=Path, default=Path("data/demo/iSeg-2017-Training"))
    parser.add_argument("--out", type=Path, required=True, help="a new folder")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out}: exists and is not empty; choose a new folder")
    import evaluate
    import predict

    bids = build(args.data, args.out / "bids")
    rows = []
    for name, masks in (("as they are", None), ("--brain-mask derivatives/synthstrip",
                                                  bids / "derivatives" / "synthstrip")):
        output = args.out / ("masked" if masks else "unmasked")
        predict.predict(args.checkpoint, [bids], output, bids_modalities=["T1w", "T2w"], brain_mask=masks)
        scores = evaluate.evaluate_folders(output, bids / "derivatives" / "manual", "dseg")
        dice = [np.mean([r["dice"] for r in scores if r["structure"] == t]) for t in TISSUES.values()]
        rows.append(f"| {name} | " + " | ".join(f"{d:.3f}" for d in dice) + f" | {np.mean(dice):.3f} |")
    print(f"\n{args.checkpoint} on subjects {', '.join(map(str, SUBJECTS))} not skull-stripped\n")
    print("| scans | CSF | GM | WM | mean |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
