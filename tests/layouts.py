"""Small datasets written in the real on-disk layouts (shapes shrunk, formats and names exact)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

# BraTS volumes are stored with the first two axes flipped (an LPS-like affine).
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def write_nifti(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def blob_labels(shape: Sequence[int], layers: Sequence[tuple[int, float]], seed: int) -> np.ndarray:
    """Concentric ellipsoids: ``layers`` of (label value, radius as a fraction of the half-size),
    outermost first, centre jittered by ``seed``."""
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    radius = np.sqrt((((grid - centre) / (np.array(shape) / 2)) ** 2).sum(-1))
    label = np.zeros(shape, dtype=np.uint8)
    for value, size in layers:
        label[radius < size] = value
    return label


def images_for(label: np.ndarray, means: dict[int, float], seed: int, dtype: type = np.int16) -> np.ndarray:
    """An image with a mean intensity per label value and some noise; zero outside the head."""
    rng = np.random.default_rng(seed)
    image = np.zeros(label.shape, dtype=np.float32)
    for value, mean in means.items():
        image[label == value] = mean
    inside = label > 0
    image[inside] += rng.normal(0, 15, int(inside.sum()))
    return np.clip(image, 0, None).astype(dtype)


MRBRAINS_IDS = ("1", "4", "5", "7", "14", "070", "148")
MRBRAINS_ZOOMS = (0.958, 0.958, 3.0)
MRBRAINS_MEANS = {  # label value -> intensity per pre/ image
    "reg_T1": {5: 200, 6: 180, 1: 500, 2: 550, 3: 800, 4: 600, 7: 650, 8: 700, 9: 300, 10: 400},
    "reg_IR": {5: 100, 6: 90, 1: 400, 2: 450, 3: 900, 4: 500, 7: 650, 8: 700, 9: 300, 10: 400},
    "FLAIR": {5: 100, 6: 80, 1: 500, 2: 520, 3: 450, 4: 900, 7: 480, 8: 470, 9: 700, 10: 400},
}


def write_mrbrains18(root: Path, ids: Sequence[str] = ("1", "070", "148", "14"), shape: Sequence[int] = (24, 24, 12),
                     ) -> Path:
    """``training/<id>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz``, ``orig/`` and ``<id>/segm.nii.gz`` with all 11 labels."""
    training = root / "training"
    affine = np.diag([*MRBRAINS_ZOOMS, 1.0])
    for n, subject in enumerate(ids):
        label = blob_labels(shape, [(5, 0.95), (1, 0.85), (3, 0.6), (6, 0.25)], seed=n)
        label[2:5, 10:13, 4:6] = 2  # basal ganglia
        label[14:16, 8:10, 6:8] = 4  # WM lesion
        label[17:20, 5:8, 3:5] = 7  # cerebellum
        label[6:8, 14:16, 7:9] = 8  # brain stem
        label[10:12, 4:6, 5:6] = 9  # infarction
        label[3, 3, 6] = 10  # other
        folder = training / subject
        for name, means in MRBRAINS_MEANS.items():
            image = images_for(label, means, seed=n)
            write_nifti(image, folder / "pre" / f"{name}.nii.gz", affine)
            write_nifti(image, folder / "orig" / f"{name.replace('reg_', '')}.nii.gz", affine)
        write_nifti(label, folder / "segm.nii.gz", affine)
    return training


BRATS_MEANS = {"t1": {2: 500, 1: 300, 4: 450, 3: 600}, "t1ce": {2: 500, 1: 250, 4: 1200, 3: 600},
               "t2": {2: 900, 1: 800, 4: 700, 3: 500}, "flair": {2: 900, 1: 600, 4: 700, 3: 450}}
BRATS_2023_SUFFIXES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}  # BraTS 2023 on


def write_brats_case(folder: Path, case: str, seed: int, shape: Sequence[int] = (24, 24, 20),
                     seg_name: str | None = None, with_seg: bool = True, naming: int = 2021,
                     cavity: bool = False) -> Path:
    """``<folder>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``: a brain (stored as 3) with
    oedema (2) around a core (1) holding enhancing tumour (4). ``naming=2023``: BraTS 2023's
    ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, enhancing tumour stored as 3; ``cavity``: and a
    resection cavity (4) beside the tumour, as post-treatment cases hold."""
    brain = blob_labels(shape, [(3, 0.95)], seed)
    tumour = blob_labels(shape, [(2, 0.55), (4, 0.35), (1, 0.2)], seed + 100)
    tumour[brain == 0] = 0
    case_dir = folder / case
    separator = "_" if naming == 2021 else "-"
    for modality, means in BRATS_MEANS.items():
        combined = np.where(tumour > 0, tumour, brain)
        suffix = modality if naming == 2021 else BRATS_2023_SUFFIXES[modality]
        write_nifti(images_for(combined, means, seed), case_dir / f"{case}{separator}{suffix}.nii.gz", BRATS_AFFINE)
    if naming != 2021:
        tumour = np.where(tumour == 4, 3, tumour).astype(np.uint8)
    if cavity:
        tumour[2:5, 2:5, 8:12] = 4
    if with_seg:
        write_nifti(tumour, case_dir / (seg_name or f"{case}{separator}seg.nii.gz"), BRATS_AFFINE)
    return case_dir


def write_brats(root: Path, year: int, cases: int = 4) -> Path:
    """A BraTS training folder of ``year``: 2018/2019 with HGG/ and LGG/, 2020 flat (one case
    with the oddly named segmentation), 2021 flat with 5-digit ids, 2023 (adult glioma) with
    2023's names and values, 2024 post-treatment glioma (2023's, and a resection cavity)."""
    if year in (2018, 2019):
        folder = root / f"MICCAI_BraTS_{year}_Data_Training"
        for n in range(cases):
            grade = "HGG" if n % 2 == 0 else "LGG"
            write_brats_case(folder / grade, f"Brats{year % 100}_2013_{n}_1", seed=n)
    elif year == 2020:
        folder = root / "MICCAI_BraTS2020_TrainingData"
        for n in range(1, cases + 1):
            case = f"BraTS20_Training_{n:03d}"
            write_brats_case(folder, case, seed=n, seg_name="W39_1998.09.19_Segm.nii" if n == 2 else None)
    elif year == 2021:
        folder = root / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData"
        for n in range(cases):
            write_brats_case(folder, f"BraTS2021_{n:05d}", seed=n)
    elif year == 2023:
        folder = root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
        for n in range(cases):
            write_brats_case(folder, f"BraTS-GLI-{n:05d}-000", seed=n, naming=2023)
    elif year == 2024:
        folder = root / "BraTS2024-BraTS-GLI-TrainingData" / "training_data1_v2"
        for n in range(cases):
            write_brats_case(folder, f"BraTS-GLI-{n + 2000:05d}-100", seed=n, naming=2023, cavity=n % 2 == 0)
    else:
        raise ValueError(year)
    return folder


def write_decathlon(root: Path, cases: int = 4, shape: Sequence[int] = (20, 20, 16)) -> Path:
    """``Task01_BrainTumour``-style: dataset.json, imagesTr/*.nii.gz 4D (FLAIR, T1w, t1gd, T2w),
    labelsTr/*.nii.gz, imagesTs/; plus the macOS ``._`` files the real archive carries."""
    task = root / "Task01_BrainTumour"
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    training, test = [], []
    for n in range(1, cases + 2):
        brain = blob_labels(shape, [(9, 0.9)], n)
        tumour = blob_labels(shape, [(1, 0.5), (2, 0.3), (3, 0.15)], n + 50)
        tumour[brain == 0] = 0
        combined = np.where(tumour > 0, tumour, brain)
        means = [{9: 500, 1: 900, 2: 700, 3: 800}, {9: 600, 1: 500, 2: 400, 3: 450},
                 {9: 600, 1: 500, 2: 400, 3: 1200}, {9: 500, 1: 950, 2: 800, 3: 700}]
        stack = np.stack([images_for(combined, m, n * 10 + i, np.float32) for i, m in enumerate(means)], -1)
        name = f"BRATS_{n:03d}.nii.gz"
        if n <= cases:
            write_nifti(stack, task / "imagesTr" / name)
            write_nifti(tumour, task / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
            (task / "imagesTr" / f"._{name}").write_bytes(b"\x00\x05\x16\x07")
        else:
            write_nifti(stack, task / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    description = {"name": "BRATS", "tensorImageSize": "4D", "modality": modality,
                   "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
                   "numTraining": len(training), "numTest": len(test), "training": training, "test": test}
    (task / "dataset.json").write_text(json.dumps(description, indent=4))
    return task


def write_nifti_folder(root: Path, subjects: Sequence[str] = ("sub-01", "sub-02", "sub-03", "sub-10"),
                       modalities: Sequence[str] = ("T1", "FLAIR"), shape: Sequence[int] = (18, 20, 16),
                       flat: bool = False) -> Path:
    """``<subject>/<modality>.nii.gz`` + ``<subject>/label.nii.gz`` (or flat ``<subject>_<modality>.nii.gz``),
    labels 0 background, 1 tissue, 2 lesion."""
    for n, subject in enumerate(subjects):
        label = blob_labels(shape, [(1, 0.9), (2, 0.3)], n)
        for i, modality in enumerate(modalities):
            image = images_for(label, {1: 400 + 100 * i, 2: 800 - 100 * i}, n * 7 + i)
            name = f"{subject}_{modality}.nii.gz" if flat else f"{subject}/{modality}.nii.gz"
            write_nifti(image, root / name, np.diag([1.2, 1.2, 1.5, 1.0]))
        write_nifti(label, root / (f"{subject}_label.nii.gz" if flat else f"{subject}/label.nii.gz"),
                    np.diag([1.2, 1.2, 1.5, 1.0]))
    return root


def write_csv(root: Path, folder: Path, modalities: Sequence[str] = ("T1", "FLAIR")) -> Path:
    """A CSV listing the subjects of a :func:`write_nifti_folder` folder, paths relative to the CSV."""
    path = root / "subjects.csv"
    subjects = sorted(p.name for p in folder.iterdir() if p.is_dir())
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", *modalities, "label"])
        for s in subjects:
            writer.writerow([s, *(str((folder / s / f"{m}.nii.gz").relative_to(root)) for m in modalities),
                             str((folder / s / "label.nii.gz").relative_to(root))])
    return path


NNUNET_BRATS = {  # as nnU-Net's Dataset137_BraTS2021 conversion script writes it
    "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
    "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
    "regions_class_order": [1, 2, 3],
}


def write_image(array: np.ndarray, path: Path, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """NIfTI through nibabel; ``.nrrd``/``.mha`` through SimpleITK (axes x, y, z either way; the
    same world grid: ITK's LPS directions of the NIfTI's RAS axes)."""
    if path.name.endswith((".nii.gz", ".nii")):
        return write_nifti(array, path, np.diag([*spacing, 1.0]))
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])
    sitk.WriteImage(image, str(path))
    return path


def write_nnunet(root: Path, cases: int = 4, file_ending: str = ".nii.gz", shape: Sequence[int] = (20, 20, 16),
                 name: str = "Dataset137_BraTS2021") -> Path:
    """An nnU-Net v2 raw dataset with region labels: ``dataset.json``, ``imagesTr/<case>_000{0..3}``,
    ``labelsTr/<case>`` (BraTS' labels converted as nnU-Net's script does: edema 1, necrosis 2,
    enhancing 3), one case in ``imagesTs``."""
    folder = root / name
    means = [{9: 500, 1: 900, 2: 700, 3: 800}, {9: 600, 1: 500, 2: 400, 3: 1200},
             {9: 600, 1: 950, 2: 800, 3: 700}, {9: 500, 1: 950, 2: 500, 3: 450}]
    for n in range(cases + 1):
        case = f"BraTS2021_{n:05d}"
        brain = blob_labels(shape, [(9, 0.9)], n)
        tumour = blob_labels(shape, [(1, 0.5), (2, 0.3), (3, 0.15)], n + 50)
        tumour[brain == 0] = 0
        combined = np.where(tumour > 0, tumour, brain)
        images = folder / ("imagesTr" if n < cases else "imagesTs")
        for channel, mean in enumerate(means):
            write_image(images_for(combined, mean, n * 10 + channel, np.float32),
                        images / f"{case}_{channel:04d}{file_ending}")
        if n < cases:
            write_image(tumour, folder / "labelsTr" / f"{case}{file_ending}")
    description = {**NNUNET_BRATS, "numTraining": cases, "file_ending": file_ending}
    (folder / "dataset.json").write_text(json.dumps(description, indent=4))
    return folder


BIDS_TISSUES = {1: "CSF", 2: "GM", 3: "WM"}


def write_bids(root: Path, shape: Sequence[int] = (20, 20, 16)) -> Path:
    """A BIDS dataset with manual tissue labels as a derivative: sub-01 with two sessions,
    sub-02 without a T2w, sub-03 with two T1w runs, sub-04 and sub-05 plain; every participant
    in ``ses-1``. ``derivatives/manual`` holds ``*_desc-tissue_dseg.nii.gz`` and ``dseg.tsv``."""
    bids = root / "bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    manual = bids / "derivatives" / "manual"
    manual.mkdir(parents=True)
    (manual / "dataset_description.json").write_text(json.dumps(
        {"Name": "manual tissue labels", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "manual"}]}))
    (manual / "dseg.tsv").write_text("index\tname\n" + "".join(f"{v}\t{n}\n" for v, n in BIDS_TISSUES.items()))
    sessions = [("01", "1"), ("01", "2"), ("02", "1"), ("03", "1"), ("04", "1"), ("05", "1")]
    for n, (subject, session) in enumerate(sessions):
        stem = f"sub-{subject}_ses-{session}"
        anat = f"sub-{subject}/ses-{session}/anat"
        label = blob_labels(shape, [(1, 0.9), (2, 0.7), (3, 0.4)], n)
        runs = ["_run-1", "_run-2"] if subject == "03" else [""]
        for run in runs:
            write_nifti(images_for(label, {1: 300, 2: 600, 3: 900}, n), bids / anat / f"{stem}{run}_T1w.nii.gz")
        if subject != "02":
            write_nifti(images_for(label, {1: 900, 2: 600, 3: 300}, n + 20), bids / anat / f"{stem}_T2w.nii.gz")
        write_nifti(label, manual / anat / f"{stem}_desc-tissue_dseg.nii.gz")
    return bids


# FreeSurfer's conformed vox2ras: voxel axes towards Left, Inferior, Anterior, 1 mm.
FREESURFER_AFFINE = np.array([[-1.0, 0, 0, 10], [0, 0, 1.0, -8], [0, -1.0, 0, 10], [0, 0, 0, 1]])
# A few aseg structures per hemisphere (left, right): WM, cortex, lateral ventricle, thalamus, ventral DC.
ASEG_LAYERS = ((24, 24, 0.95), (3, 42, 0.85), (2, 41, 0.6), (10, 49, 0.35), (28, 60, 0.25), (4, 43, 0.15))
NORM_MEANS = {24: 30, 3: 75, 42: 75, 2: 110, 41: 110, 10: 90, 49: 90, 28: 100, 60: 100, 4: 20, 43: 20,
              8: 70, 47: 70, 7: 105, 46: 105, 16: 100}


def write_freesurfer(root: Path, subjects: Sequence[str] = ("sub-01", "sub-02", "sub-03", "sub-10"),
                     shape: Sequence[int] = (20, 16, 20), volumes: Sequence[str] = ("norm", "T1")) -> Path:
    """A SUBJECTS_DIR as recon-all leaves it: ``<subject>/mri/{norm,T1}.mgz`` (uint8) and
    ``aseg.mgz`` (int32, FreeSurfer's values: the hemispheres split along the first voxel axis,
    cerebellum and brain stem in the lowest planes), voxel axes L, I, A; ``surf/`` and
    ``scripts/`` beside ``mri/``; a template subject ``fsaverage`` and a ``README`` at the top."""
    for n, subject in enumerate([*subjects, "fsaverage"]):
        aseg = blob_labels(shape, [(left, size) for left, _, size in ASEG_LAYERS], n).astype(np.int32)
        right = np.arange(shape[0])[:, None, None] < shape[0] // 2  # axis 0 points left: low indices are right
        for left, right_value, _ in ASEG_LAYERS:
            aseg[(aseg == left) & right] = right_value
        low = np.arange(shape[1])[None, :, None] >= shape[1] - 3  # axis 1 points inferior: the last planes
        inside = aseg > 0
        aseg[low & inside & right] = 47
        aseg[low & inside & ~right] = 8
        aseg[low & inside & (np.abs(np.arange(shape[0]) - shape[0] / 2 + 0.5) < 2)[:, None, None]] = 16
        front = (np.arange(shape[2]) < shape[2] // 3)[None, None, :]
        aseg[low & inside & (aseg == 8) & front] = 7
        aseg[low & inside & (aseg == 47) & front] = 46
        mri = root / subject / "mri"
        mri.mkdir(parents=True)
        nib.save(nib.MGHImage(aseg, FREESURFER_AFFINE), str(mri / "aseg.mgz"))
        for i, volume in enumerate(volumes):
            image = images_for(aseg, {v: m * (1 + 0.2 * i) for v, m in NORM_MEANS.items()}, 11 * n + i, np.float32)
            conformed = np.clip(image, 0, 255).astype(np.uint8)  # recon-all's volumes are uint8
            nib.save(nib.MGHImage(conformed, FREESURFER_AFFINE), str(mri / f"{volume}.mgz"))
        for folder in ("surf", "scripts"):
            (root / subject / folder).mkdir()
        (root / subject / "scripts" / "recon-all.done").write_text("#END_TIME\n")
    (root / "README").write_text("subjects processed with recon-all\n")
    return root
