"""A BIDS dataset of real anatomy at a real scan's size, to try the BIDS path as a researcher's
data would take it: the ICBM152 2009 T1 template that nilearn ships, at 1 mm (160x196x170 voxels
on the demo's brain grid), as ``--participants`` T1w scans, with tissue labels built from the
template's GM/WM maps and mask (as the demo's are) in ``derivatives/manual`` and its ``dseg.tsv``.

    python -m demo.real_bids --out data/bids-icbm [--participants 4] [--spacing 1.0] [--fmriprep] [--unstripped]

Participants differ only by an intensity scale and noise inside the brain, so this is a check
of the pipeline on real sizes and orientations, not a benchmark of accuracy: every second
participant is stored left-right flipped (LAS, as many scanners write), which the DataModules
reorient to RAS+ and ``predict.py`` writes back. ``--fmriprep`` adds ``derivatives/fmriprep`` laid
out as fMRIPrep writes its anatomical outputs (conformed to RAS, also for the LAS participants):
``desc-preproc_T1w`` and the brain mask ``desc-brain_mask``, each with a ``space-MNI152NLin2009cAsym``
copy, the tissue map ``_dseg`` (GM 1, WM 2, CSF 3, no table) and ``desc-aseg_dseg`` with
``desc-aseg_dseg.tsv`` (FreeSurfer's values for cerebral white matter 2, cortex 3 and lateral
ventricle 4). ``--freesurfer`` adds
``derivatives/freesurfer``, a SUBJECTS_DIR as recon-all leaves it: ``<participant>/mri/norm.mgz``
(uint8, white matter about 110) and ``aseg.mgz`` (CSF 24, cortex 3/42 and white matter 2/41 by
hemisphere), conformed to voxel axes L, I, A (on the brain's box, not 256³), and ``fsaverage``.
``--unstripped`` writes the T1w scans as raw scans come, not skull-stripped (a synthetic head:
bone, scalp and noise around the real brain), with their brain masks in ``derivatives/synthstrip``
as SynthStrip's would be kept: the BIDS DataModule's ``masks_dir`` and ``predict.py --brain-mask``
give back the skull-stripped dataset's voxels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from core.io import atomic_path, save_nifti_atomically, write_text_atomically
from demo.synthetic_iseg import LABEL_VALUES, icbm_reference

TISSUES = {1: "CSF", 2: "GM", 3: "WM"}  # dseg.tsv of the labels: the demo's iSeg values 10, 150, 250 in order
FMRIPREP_TISSUES = {1: 3, 2: 1, 3: 2}  # ours -> fMRIPrep's tissue map: GM 1, WM 2, CSF 3
ASEG = {1: 4, 2: 3, 3: 2}  # ours -> FreeSurfer aseg: Left-Lateral-Ventricle 4, Left-Cerebral-Cortex 3, WM 2
ASEG_NAMES = {2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle"}
FREESURFER_ASEG = {1: (24, 24), 2: (3, 42), 3: (2, 41)}  # ours -> aseg (left, right hemisphere): CSF, cortex, WM


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    save_nifti_atomically(nib.Nifti1Image(array, affine), path)


def _conformed(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """``array`` saved as FreeSurfer saves a conformed volume: MGZ, voxel axes L, I, A."""
    image = nib.Nifti1Image(array, affine)
    image = image.as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt("LIA")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(nib.MGHImage(np.asarray(image.dataobj), image.affine), str(tmp))


def _freesurfer_subject(folder: Path, image: np.ndarray, tissues: np.ndarray, affine: np.ndarray) -> None:
    """recon-all's ``mri/norm.mgz`` and ``aseg.mgz`` of one participant (RAS ``affine``, so the
    first half of the first axis is the left hemisphere)."""
    left = (np.arange(tissues.shape[0]) < tissues.shape[0] / 2)[:, None, None]
    aseg = np.zeros(tissues.shape, dtype=np.int32)
    for ours, (on_left, on_right) in FREESURFER_ASEG.items():
        aseg[(tissues == ours) & left] = on_left
        aseg[(tissues == ours) & ~left] = on_right
    norm = np.clip(image * (110.0 / image[tissues == 3].mean()), 0, 255).astype(np.uint8)
    _conformed(norm, affine, folder / "mri" / "norm.mgz")
    _conformed(aseg, affine, folder / "mri" / "aseg.mgz")


def _mapped(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = np.zeros_like(labels)
    for ours, theirs in mapping.items():
        out[labels == ours] = theirs
    return out


def with_head(image: np.ndarray, brain: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (zero outside ``brain``) as a scan that is not skull-stripped: 4 mm of dark bone,
    then 4 mm of bright scalp around the brain, noise in the air (synthetic, not anatomy)."""
    level = float(np.median(image[brain]))
    bone = ndimage.binary_dilation(brain, iterations=max(1, round(4 / spacing))) & ~brain
    scalp = ndimage.binary_dilation(brain, iterations=max(1, round(8 / spacing))) & ~brain & ~bone
    air = ~(brain | bone | scalp)
    head = image.astype(np.float32)
    head[bone] = 0.15 * level + rng.normal(0.0, 0.03 * level, int(bone.sum()))
    head[scalp] = 1.1 * level + rng.normal(0.0, 0.05 * level, int(scalp.sum()))
    head[air] = np.abs(rng.normal(0.0, 0.02 * level, int(air.sum())))
    return np.clip(head, 0, None).astype(np.int16)


def build(out: Path, participants: int = 4, spacing: float = 1.0, seed: int = 0, fmriprep: bool = False,
          freesurfer: bool = False, unstripped: bool = False) -> Path:
    """Write the dataset into ``out`` (a new or empty folder) and return it. ``unstripped``: the
    T1w scans with a head around the brain, their brain masks in ``derivatives/synthstrip``
    (the brain's voxels are those of the stripped dataset of the same seed)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; choose a new folder")
    t1, label = icbm_reference(spacing)
    tissues = np.zeros(label.shape, dtype=np.uint8)
    for index, value in enumerate(LABEL_VALUES, start=1):
        tissues[label == value] = index
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -np.asarray(t1.shape) * spacing / 2
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, t1.shape[0] - 1  # voxel i -> n-1-i: the same world, stored LAS
    rng, head_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    manual = out / "derivatives" / "manual"
    brain = t1 > 0
    for number in range(1, participants + 1):
        sub = f"sub-{number:02d}"
        image = t1 * rng.uniform(0.7, 1.3) + rng.normal(0.0, 10.0, t1.shape) * (t1 > 0)
        image, labels, grid = np.clip(image, 0, None).astype(np.int16), tissues, affine
        if fmriprep:  # its outputs conformed to RAS, whatever the scan's storage order
            anat = out / "derivatives" / "fmriprep" / sub / "anat"
            for name in (f"{sub}_desc-preproc_T1w", f"{sub}_space-MNI152NLin2009cAsym_desc-preproc_T1w"):
                _save(image, affine, anat / f"{name}.nii.gz")
            _save(_mapped(tissues, FMRIPREP_TISSUES), affine, anat / f"{sub}_dseg.nii.gz")
            _save(_mapped(tissues, FMRIPREP_TISSUES), affine, anat / f"{sub}_space-MNI152NLin2009cAsym_dseg.nii.gz")
            _save(_mapped(tissues, ASEG), affine, anat / f"{sub}_desc-aseg_dseg.nii.gz")
            for name in (f"{sub}_desc-brain_mask", f"{sub}_space-MNI152NLin2009cAsym_desc-brain_mask"):
                _save((tissues > 0).astype(np.uint8), affine, anat / f"{name}.nii.gz")
        if freesurfer:
            _freesurfer_subject(out / "derivatives" / "freesurfer" / sub, image, tissues, affine)
        mask = brain.astype(np.uint8)
        if unstripped:
            image = with_head(image, brain, spacing, head_rng)
        if number % 2 == 0:
            image, labels, mask, grid = image[::-1].copy(), tissues[::-1].copy(), mask[::-1].copy(), affine @ flip
        _save(image, grid, out / sub / "anat" / f"{sub}_T1w.nii.gz")
        _save(labels, grid, manual / sub / "anat" / f"{sub}_dseg.nii.gz")
        if unstripped:  # as SynthStrip's masks are kept in a BIDS derivative
            _save(mask, grid, out / "derivatives" / "synthstrip" / sub / "anat" / f"{sub}_desc-brain_mask.nii.gz")
    write_text_atomically(out / "dataset_description.json", json.dumps(
        {"Name": "ICBM152 2009 at scan size", "BIDSVersion": "1.9.0", "DatasetType": "raw"}, indent=1))
    write_text_atomically(manual / "dataset_description.json", json.dumps(
        {"Name": "tissues from the ICBM152 GM/WM maps", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "demo.real_bids"}]}, indent=1))
    write_text_atomically(manual / "dseg.tsv", "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in TISSUES.items()))
    if unstripped:
        write_text_atomically(out / "derivatives" / "synthstrip" / "dataset_description.json", json.dumps(
            {"Name": "brain masks (as SynthStrip writes them; here the template's own)", "BIDSVersion": "1.9.0",
             "DatasetType": "derivative", "GeneratedBy": [{"Name": "demo.real_bids"}]}, indent=1))
    if freesurfer:  # the template recon-all links into every SUBJECTS_DIR
        _freesurfer_subject(out / "derivatives" / "freesurfer" / "fsaverage", t1, tissues, affine)
    if fmriprep:
        prep = out / "derivatives" / "fmriprep"
        write_text_atomically(prep / "dataset_description.json", json.dumps(
            {"Name": "fMRIPrep - fMRI PREProcessing workflow (as laid out by demo.real_bids)", "BIDSVersion": "1.9.0",
             "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}, indent=1))
        write_text_atomically(prep / "desc-aseg_dseg.tsv",
                              "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in ASEG_NAMES.items()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the BIDS dataset")
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size in mm (1.0: a real scan's)")
    parser.add_argument("--fmriprep", action="store_true",
                        help="also derivatives/fmriprep, laid out as fMRIPrep writes its anatomical outputs")
    parser.add_argument("--freesurfer", action="store_true",
                        help="also derivatives/freesurfer: a SUBJECTS_DIR, each participant's norm.mgz, aseg.mgz")
    parser.add_argument("--unstripped", action="store_true",
                        help="the T1w scans with a (synthetic) head around the brain, as raw scans are; their brain "
                             "masks in derivatives/synthstrip")
    args = parser.parse_args(argv)
    root = build(args.out, args.participants, args.spacing, fmriprep=args.fmriprep, freesurfer=args.freesurfer,
                 unstripped=args.unstripped)
    shape = nib.load(next(root.glob("sub-01/anat/*_T1w.nii.gz"))).shape
    print(f"{root}: {args.participants} participants, T1w {shape} at {args.spacing} mm, labels in derivatives/manual")


if __name__ == "__main__":
    main()
