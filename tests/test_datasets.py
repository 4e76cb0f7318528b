"""Each DataModule on its real layout: subjects found, modalities stacked in order, labels mapped."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import (
    BRATS_AFFINE,
    write_brats,
    write_brats_case,
    write_csv,
    write_decathlon,
    write_freesurfer,
    write_mrbrains18,
    write_nifti_folder,
)

from datamodules import (
    IGNORE_INDEX,
    BraTSDataModule,
    DataError,
    DecathlonDataModule,
    FreeSurferDataModule,
    ISeg2019DataModule,
    MRBrainS18DataModule,
    NiftiDataModule,
)

SMALL = {"patch_size": (8, 8, 8), "batch_size": 2, "samples_per_volume": 2, "cache_dir": None}


def raw(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# MRBrainS18.

def test_mrbrains18_subjects_modalities_and_full_labels(tmp_path: Path) -> None:
    training = write_mrbrains18(tmp_path)
    dm = MRBrainS18DataModule(str(training), val_subjects=["148"], **SMALL)
    assert list(dm.subjects()) == ["1", "14", "070", "148"]  # by number; "070" keeps its name
    subject = dm.subjects()["070"]
    assert [p.relative_to(training).as_posix() for p in subject.images] == [
        "070/pre/reg_T1.nii.gz", "070/pre/reg_IR.nii.gz", "070/pre/FLAIR.nii.gz"]
    assert list(dm.label_space.class_names)[1:3] == ["cortical_GM", "basal_ganglia"] and dm.label_space.num_classes == 9
    dm.setup("validate")
    item = dm.val_set[0]
    assert item["image"].shape == (3, 24, 24, 12)
    segm = raw(training / "148" / "segm.nii.gz")
    label = item["label"][0].numpy()
    np.testing.assert_array_equal(label[segm <= 8], segm[segm <= 8])
    assert (label[segm >= 9] == IGNORE_INDEX).all() and (segm >= 9).any()


def test_mrbrains18_thesis_labels(tmp_path: Path) -> None:
    training = write_mrbrains18(tmp_path)
    dm = MRBrainS18DataModule(str(training), label_mode="thesis", val_subjects=["1"], **SMALL)
    assert list(dm.label_space.class_names) == ["background", "CSF", "GM", "WM"]
    assert list(dm.label_space.class_values) == [0, 5, 1, 3]
    dm.setup("validate")
    segm = raw(training / "1" / "segm.nii.gz")
    label = dm.val_set[0]["label"][0].numpy()
    expected = np.select([segm == 0, np.isin(segm, [5, 6]), np.isin(segm, [1, 2]), np.isin(segm, [3, 4])],
                         [0, 1, 2, 3], IGNORE_INDEX)
    np.testing.assert_array_equal(label, expected)
    assert (label[np.isin(segm, [7, 8, 9, 10])] == IGNORE_INDEX).all()


def test_mrbrains18_experiment_config_names_match(tmp_path: Path) -> None:
    import yaml

    dataset = yaml.safe_load(Path("configs/datasets/mrbrains18.yaml").read_text())["data"]
    experiment = yaml.safe_load(Path("configs/experiments/mrbrains18.yaml").read_text())["data"]
    assert dataset["class_path"] == "datamodules.MRBrainS18DataModule" and "class_path" not in experiment
    args = {k: v for k, v in {**dataset["init_args"], **experiment["init_args"]}.items() if k != "data_dir"}
    assert args["label_mode"] == "thesis"
    training = write_mrbrains18(tmp_path, ids=("1", "4", "148"))
    dm = MRBrainS18DataModule(str(training), **{**args, "cache_dir": None})
    assert [s.subject_id for s in dm.split()["test"]] == ["1"] and dm.modality_names == ["T1", "IR", "FLAIR"]


# BraTS.

@pytest.mark.parametrize("year", [2018, 2019, 2020, 2021])
def test_brats_finds_cases_of_every_year(tmp_path: Path, year: int) -> None:
    folder = write_brats(tmp_path, year)
    dm = BraTSDataModule(str(folder), val_subjects=[], **SMALL)
    subjects = dm.subjects()
    assert len(subjects) == 4
    for case_id, subject in subjects.items():
        assert [p.name for p in subject.images] == [f"{case_id}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
        assert subject.label.parent.name == case_id
    if year == 2020:  # the case whose segmentation is named differently
        assert subjects["BraTS20_Training_002"].label.name == "W39_1998.09.19_Segm.nii"
    if year == 2018:
        assert {s.images[0].parent.parent.name for s in subjects.values()} == {"HGG", "LGG"}


def test_brats_labels_reoriented_and_multiclass(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, 2021)
    dm = BraTSDataModule(str(folder), val_subjects=["BraTS2021_00001"], **SMALL)
    assert list(dm.label_space.class_values) == [0, 1, 2, 4] and not dm.label_space.regions
    dm.setup("validate")
    item = dm.val_set[0]
    seg = raw(folder / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    # The files are stored with the first two axes flipped; volumes come out RAS+.
    expected = np.select([seg == 1, seg == 2, seg == 4], [1, 2, 3], 0)[::-1, ::-1, :]
    np.testing.assert_array_equal(item["label"][0].numpy(), expected)
    assert np.allclose(np.diag(item["affine"].numpy())[:3], [1, 1, 1])
    np.testing.assert_array_equal(item["original_affine"].numpy(), BRATS_AFFINE)


def test_brats_region_based(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, 2020)
    dm = BraTSDataModule(str(folder), region_based=True, **SMALL)
    assert dm.label_space.structure_names == ["WT", "TC", "ET"]
    assert dm.label_space.structure_classes == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def test_brats_case_without_segmentation(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, 2020)
    write_brats_case(folder, "BraTS20_Training_099", seed=9, with_seg=False)
    with pytest.raises(DataError, match=r"BraTS20_Training_099: case BraTS20_Training_099 has no segmentation"):
        BraTSDataModule(str(folder), **SMALL).subjects()
    # A validation folder (no segmentations) is fine for prediction, without a labelled data_dir.
    validation = tmp_path / "MICCAI_BraTS2020_ValidationData"
    write_brats_case(validation, "BraTS20_Validation_001", seed=1, with_seg=False)
    dm = BraTSDataModule(str(tmp_path / "absent"), predict_dir=str(validation), **SMALL)
    dm.setup("predict")
    assert len(dm.predict_set) == 1 and "label" not in dm.predict_set[0]


@pytest.mark.parametrize("year", [2023, 2024])
def test_brats_2023_on_names_modalities_and_values(tmp_path: Path, year: int) -> None:
    """BraTS 2023 on (``<case>-t1n/-t1c/-t2w/-t2f/-seg``, enhancing tumour 3; post-treatment adds
    the resection cavity 4): the same modality names, the values of the release."""
    folder = write_brats(tmp_path, year)
    convention = "brats2023" if year == 2023 else "brats_post_treatment"
    case = "BraTS-GLI-00001-000" if year == 2023 else "BraTS-GLI-02000-100"  # 02000 holds a cavity
    dm = BraTSDataModule(str(folder), modalities=["FLAIR", "T1ce"], val_subjects=[case],
                         label_convention="auto" if year == 2023 else convention, **SMALL)
    subjects = dm.subjects()
    assert len(subjects) == 4 and dm.convention == convention
    assert [p.name for p in subjects[case].images] == [f"{case}-t2f.nii.gz", f"{case}-t1c.nii.gz"]
    assert subjects[case].label.name == f"{case}-seg.nii.gz"
    assert list(dm.label_space.class_values) == ([0, 1, 2, 3] if year == 2023 else [0, 1, 2, 3, 4])
    dm.setup("validate")
    seg = raw(folder / case / f"{case}-seg.nii.gz")
    expected = seg[::-1, ::-1, :]  # the values are the classes here; the files are stored flipped
    assert set(np.unique(seg)) == ({0, 1, 2, 3} if year == 2023 else {0, 1, 2, 3, 4})
    np.testing.assert_array_equal(dm.val_set[0]["label"][0].numpy(), expected)
    regions = BraTSDataModule(str(folder), region_based=True, label_convention=convention, **SMALL).label_space
    assert regions.structure_classes == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3],
                                         **({"RC": [4]} if year == 2024 else {})}
    assert regions.paint_classes == [2, 1, 3, *([4] if year == 2024 else [])]


def test_brats_conventions_are_never_mixed_in_silence(tmp_path: Path) -> None:
    post_treatment = write_brats(tmp_path, 2024)
    # Post-treatment cases are named as 2023's: read as 2023's, the cavity is a value outside the map.
    dm = BraTSDataModule(str(post_treatment), val_subjects=["BraTS-GLI-02000-100"], **SMALL)
    with pytest.raises(DataError, match=r"BraTS-GLI-02000-100-seg\.nii\.gz: label values \[4\] are not in the "
                                         r"label map \[0, 1, 2, 3\]; a 4 is the resection cavity of BraTS 2024's "
                                         r"post-treatment glioma, .*: label_convention: brats_post_treatment$"):
        dm.setup("validate")
    # A 2018-2021 convention given for 2023's names is said, and so are the values it cannot read.
    with pytest.warns(UserWarning, match="label_convention brats given for cases named as BraTS 2023 on names them "
                                         "\\(convention brats2023\\)"):
        dm = BraTSDataModule(str(post_treatment), label_convention="brats", val_subjects=["BraTS-GLI-02000-100"],
                             **SMALL)
        assert dm.label_space.class_values[-1] == 4
    with pytest.raises(DataError, match=r"label values \[3\] are not in the label map \[0, 1, 2, 4\]; a 3 is BraTS "
                                         r"2023's enhancing tumour: label_convention: brats2023$"):
        dm.setup("validate")
    # One folder with cases of both namings: their enhancing tumours differ (4 against 3).
    glioma = write_brats(tmp_path, 2023)
    write_brats_case(glioma, "BraTS2021_00009", seed=3)
    with pytest.raises(DataError, match="holds cases of both BraTS namings"):
        BraTSDataModule(str(glioma), val_subjects=["BraTS2021_00009"], **SMALL).setup("validate")
    # One case mixing them.
    case = write_brats_case(tmp_path / "mixed", "BraTS-GLI-00007-000", seed=7, naming=2023)
    (case / "BraTS-GLI-00007-000-t2f.nii.gz").rename(case / "BraTS-GLI-00007-000_flair.nii.gz")
    with pytest.raises(DataError, match="BraTS-GLI-00007-000: mixes the 2018-2021 file names"):
        BraTSDataModule(str(tmp_path / "mixed"), **SMALL).subjects()
    # A case missing one modality is said, not passed over (the FLAIR used to be how cases were found).
    (post_treatment / "BraTS-GLI-02001-100" / "BraTS-GLI-02001-100-t2f.nii.gz").unlink()
    with pytest.raises(DataError, match=r"BraTS-GLI-02001-100: no FLAIR image \(BraTS-GLI-02001-100-t2f\.nii\.gz\)"):
        BraTSDataModule(str(post_treatment), label_convention="brats_post_treatment", **SMALL).subjects()
    with pytest.raises(ValueError, match="label_convention must be auto or one of"):
        BraTSDataModule(str(post_treatment), label_convention="brats2024", **SMALL)


# FreeSurfer.

# aseg value -> tissue class (0 background, 1 CSF, 2 GM, 3 WM), by hand for the structures the layout writes.
ASEG_TISSUE = {0: 0, 24: 1, 4: 1, 43: 1, 3: 2, 42: 2, 10: 2, 49: 2, 8: 2, 47: 2, 2: 3, 41: 3, 7: 3, 46: 3, 16: 3,
               28: IGNORE_INDEX, 60: IGNORE_INDEX}


def test_a_freesurfer_subjects_dir_reads_its_volumes_and_aseg_as_tissues_or_structures(tmp_path: Path) -> None:
    """Subjects are the folders with ``mri/`` (not ``fsaverage``, not files), in natural order; the
    conformed LIA volumes come out in RAS; aseg's structures become CSF / GM / WM (ventral DC
    ignored) or, with ``label_mode: aseg``, each a class of its own by FreeSurfer's name."""
    from core.geometry import reorient_to_canonical

    root = write_freesurfer(tmp_path / "subjects")
    dm = FreeSurferDataModule(str(root), val_subjects=["sub-02"], **SMALL)
    subjects = dm.subjects()
    assert list(subjects) == ["sub-01", "sub-02", "sub-03", "sub-10"]
    assert subjects["sub-02"].images == (root / "sub-02" / "mri" / "norm.mgz",)
    assert subjects["sub-02"].label == root / "sub-02" / "mri" / "aseg.mgz"
    assert dm.label_space.class_names == ("background", "CSF", "GM", "WM")
    assert dm.label_space.class_values == (0, 24, 3, 2)  # written back as FreeSurfer names them
    dm.setup("validate")
    aseg = nib.load(str(root / "sub-02" / "mri" / "aseg.mgz"))
    canonical, _ = reorient_to_canonical(np.asarray(aseg.dataobj), aseg.affine)
    assert set(np.unique(canonical).tolist()) == set(ASEG_TISSUE)
    expected = np.vectorize(ASEG_TISSUE.get)(canonical)
    np.testing.assert_array_equal(dm.val_set[0]["label"][0].numpy(), expected)
    structures = FreeSurferDataModule(str(root), label_mode="aseg", modalities=["norm", "T1"], val_subjects=["sub-02"],
                                      **SMALL)
    assert structures.label_space.num_classes == 46 and structures.in_channels == 2
    structures.setup("validate")
    names = structures.label_space.class_names
    label = structures.val_set[0]["label"][0].numpy()
    assert names[label[canonical == 60][0]] == "Right-VentralDC" and names[label[canonical == 3][0]] == (
        "Left-Cerebral-Cortex")


def test_a_freesurfer_subject_recon_all_left_unfinished_or_outside_aseg_is_named(tmp_path: Path) -> None:
    root = write_freesurfer(tmp_path / "subjects")
    with pytest.raises(DataError, match=r"sub-01/mri/FLAIR\.mgz: file not found \(subject sub-01 lacks this volume; "
                                        r"did recon-all finish\?\)"):
        FreeSurferDataModule(str(root), modalities=["norm", "FLAIR"], **SMALL).subjects()
    (root / "sub-03" / "mri" / "aseg.mgz").unlink()
    with pytest.raises(DataError, match=r"sub-03/mri/aseg\.mgz: file not found \(subject sub-03 has no aseg\.mgz"):
        FreeSurferDataModule(str(root), **SMALL).subjects()
    shutil.rmtree(root / "sub-03")
    aseg = nib.load(str(root / "sub-02" / "mri" / "aseg.mgz"))
    lesion = np.asarray(aseg.dataobj).copy()
    lesion[lesion == 41] = 77  # WM hypointensities: still white matter
    lesion[10, 8, 10] = 25  # Left-Lesion: in no standard map
    nib.save(nib.MGHImage(lesion, aseg.affine), str(root / "sub-02" / "mri" / "aseg.mgz"))
    with pytest.raises(DataError, match=r"sub-02/mri/aseg\.mgz: label values \[25\] are not in the label map .*; "
                                        r"label_mode tissues groups aseg's 45 standard structures"):
        FreeSurferDataModule(str(root), val_subjects=["sub-02"], **SMALL).setup("validate")
    with pytest.raises(DataError, match="no FreeSurfer subjects found"):
        FreeSurferDataModule(str(tmp_path), **SMALL).subjects()


# Decathlon.

def test_decathlon_reads_dataset_json_and_4d_images(tmp_path: Path) -> None:
    task = write_decathlon(tmp_path)
    dm = DecathlonDataModule(str(task), modalities=["T2w", "FLAIR"], val_subjects=["BRATS_002"], **SMALL)
    assert dm.available_modalities == ("FLAIR", "T1w", "t1gd", "T2w")
    assert list(dm.label_space.class_names) == ["background", "edema", "non-enhancing tumor", "enhancing tumour"]
    assert list(dm.subjects()) == ["BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004"]
    dm.setup("validate")
    item = dm.val_set[0]
    stack = raw(task / "imagesTr" / "BRATS_002.nii.gz")
    assert item["image"].shape == (2, 20, 20, 16)
    # Channel 0 is T2w (4th volume), channel 1 FLAIR (1st): their brightest tissue differs.
    label = item["label"][0].numpy()
    for channel, volume in ((0, 3), (1, 0)):
        image = item["image"][channel].numpy()
        brightest = max(range(1, 4), key=lambda c: image[label == c].mean())
        seg = raw(task / "labelsTr" / "BRATS_002.nii.gz")
        assert brightest == max(range(1, 4), key=lambda c: stack[..., volume][seg == c].mean())
    dm = DecathlonDataModule(str(task), predict_dir=str(task), **SMALL)
    dm.setup("predict")
    assert [dm.predict_set[i]["subject"] for i in range(len(dm.predict_set))] == ["BRATS_005"]


def test_decathlon_without_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json: file not found"):
        DecathlonDataModule(str(tmp_path), **SMALL)


# Generic NIfTI.

LABELS = {0: "background", 1: "tissue", 2: "lesion"}


def test_nifti_folder_flat_and_csv_layouts_agree(tmp_path: Path) -> None:
    nested = write_nifti_folder(tmp_path / "nested")
    flat = write_nifti_folder(tmp_path / "flat", flat=True)
    table = write_csv(tmp_path, nested)
    modules = [
        NiftiDataModule(str(nested), modalities=["FLAIR", "T1"], labels=LABELS, val_subjects=["sub-03"], **SMALL),
        NiftiDataModule(str(flat), modalities=["FLAIR", "T1"], labels=LABELS, val_subjects=["sub-03"],
                        image_pattern="{subject}_{modality}.nii.gz", label_pattern="{subject}_label.nii.gz", **SMALL),
        NiftiDataModule(str(table), modalities=["FLAIR", "T1"], labels=LABELS, val_subjects=["sub-03"], **SMALL),
    ]
    items = []
    for dm in modules:
        assert list(dm.subjects()) == ["sub-01", "sub-02", "sub-03", "sub-10"]
        dm.setup("validate")
        items.append(dm.val_set[0])
    for item in items[1:]:
        np.testing.assert_array_equal(item["image"], items[0]["image"])
        np.testing.assert_array_equal(item["label"], items[0]["label"])
    expected = raw(nested / "sub-03" / "label.nii.gz")
    np.testing.assert_array_equal(items[0]["label"][0].numpy(), expected)
    flair = raw(nested / "sub-03" / "FLAIR.nii.gz")
    brain = flair != 0
    assert np.corrcoef(items[0]["image"][0].numpy()[brain], flair[brain])[0, 1] > 0.999  # channel 0 = FLAIR


def test_nifti_scans_not_skull_stripped_are_masked_by_mask_pattern_or_a_csv_column(tmp_path: Path) -> None:
    """``mask_pattern`` (a CSV's ``mask`` column, an empty cell for a scan already stripped):
    each subject's brain mask sets its images to 0 outside before normalisation, so a folder of
    scans with a head around the brain gives the volumes of the stripped scans; a missing mask
    is one line naming the file and the subject."""
    from core.volumes import load_subject

    stripped = write_nifti_folder(tmp_path / "stripped")
    heads = write_nifti_folder(tmp_path / "heads")
    rng = np.random.default_rng(0)
    for subject in ("sub-01", "sub-02", "sub-03", "sub-10"):
        brain = raw(heads / subject / "label.nii.gz") > 0
        for modality in ("T1", "FLAIR"):
            image = nib.load(str(heads / subject / f"{modality}.nii.gz"))
            data = np.asarray(image.dataobj).copy()
            data[~brain] = 250 + rng.integers(0, 60, int((~brain).sum()))  # skull, scalp, noise
            nib.save(nib.Nifti1Image(data, image.affine), str(heads / subject / f"{modality}.nii.gz"))
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), image.affine), str(heads / subject / "brain_mask.nii.gz"))
    table = write_csv(tmp_path, heads)
    rows = table.read_text().splitlines()
    table.write_text("\n".join([rows[0] + ",mask", *(f"{row},heads/{row.split(',')[0]}/brain_mask.nii.gz"
                                                     for row in rows[1:])]) + "\n")
    kwargs = {"modalities": ["T1", "FLAIR"], "labels": LABELS, **SMALL}
    masked = NiftiDataModule(str(heads), mask_pattern="{subject}/brain_mask.nii.gz", **kwargs)
    listed = NiftiDataModule(str(table), **kwargs)
    assert masked.subjects()["sub-02"].brain_mask == heads / "sub-02" / "brain_mask.nii.gz"
    assert listed.subjects()["sub-02"].brain_mask == heads / "sub-02" / "brain_mask.nii.gz"
    plain, unmasked = NiftiDataModule(str(stripped), **kwargs), NiftiDataModule(str(heads), **kwargs)
    for subject in ("sub-02", "sub-10"):
        reference = load_subject(plain.subjects()[subject], plain.label_space, plain.preprocessing)
        for dm in (masked, listed):
            volume = load_subject(dm.subjects()[subject], dm.label_space, dm.preprocessing)
            np.testing.assert_array_equal(volume.image, reference.image)
        as_is = load_subject(unmasked.subjects()[subject], unmasked.label_space, unmasked.preprocessing)
        assert (as_is.image != 0).all() and (reference.image == 0).mean() > 0.2
    # predict.py --brain-mask '{subject}/brain_mask.nii.gz' on a folder, for a model of NIfTI folders
    from datamodules.folders import subjects_in_folder, with_brain_masks_of

    record = {"class_path": "datamodules.nifti.NiftiDataModule",
              "init_args": {"modalities": ["T1", "FLAIR"], "labels": LABELS, "patch_size": [8, 8, 8]}}
    layout = with_brain_masks_of(record, "{subject}/brain_mask.nii.gz", "model.ckpt")
    assert layout["init_args"]["mask_pattern"] == "{subject}/brain_mask.nii.gz"
    chosen = subjects_in_folder(heads, layout, ["T1", "FLAIR"], "model.ckpt", only=["sub-02"])
    assert [s.brain_mask for s in chosen] == [heads / "sub-02" / "brain_mask.nii.gz"]
    from core.io import DataWarning
    from datamodules.folders import without_missing_masks  # a model trained with masks given a folder of none

    assert without_missing_masks(layout, heads) == layout
    with pytest.warns(DataWarning, match=r"stripped: no file like \{subject\}/brain_mask\.nii\.gz; the model was "
                                         r"trained on scans masked by their brain masks \(mask_pattern"):
        assert "mask_pattern" not in without_missing_masks(layout, stripped)["init_args"]
    iseg = {"class_path": "datamodules.iseg.ISeg2017DataModule", "init_args": {"modalities": ["T1", "T2"]}}
    with pytest.raises(DataError, match=r"\{subject\}_mask\.nii\.gz: --brain-mask with a dataset folder names the "
                                        r"derivatives pipeline of a BIDS dataset's brain masks .*, or a NIfTI folder's "
                                        r"mask pattern .*, but model\.ckpt reads ISeg2017DataModule folders"):
        with_brain_masks_of(iseg, "{subject}_mask.nii.gz", "model.ckpt")
    table.write_text(table.read_text().replace("heads/sub-03/brain_mask.nii.gz", ""))  # sub-03 given stripped
    assert NiftiDataModule(str(table), **kwargs).subjects()["sub-03"].brain_mask is None
    (heads / "sub-10" / "brain_mask.nii.gz").unlink()
    with pytest.raises(DataError, match=r"sub-10/brain_mask\.nii\.gz: file not found \(subject sub-10 has no brain "
                                        r"mask \(mask_pattern '\{subject\}/brain_mask\.nii\.gz'\)\)"):
        NiftiDataModule(str(heads), mask_pattern="{subject}/brain_mask.nii.gz", **kwargs).subjects()
    with pytest.raises(ValueError, match=r"mask_pattern '\{subject\}_\{site\}_mask\.nii\.gz' must use the "
                                         r"placeholders of image_pattern"):
        NiftiDataModule(str(heads), mask_pattern="{subject}_{site}_mask.nii.gz", **kwargs)


def test_nifti_multi_site_layout(tmp_path: Path) -> None:
    """``<site>/<patient>/<modality>.nii.gz``: a config with ``{site}/{subject}/...`` patterns, no
    code. Ids join site and patient, so the same patient name at two sites stays two subjects."""
    nested = write_nifti_folder(tmp_path / "nested")
    sites = tmp_path / "sites"
    for site, subject in (("siteA", "sub-01"), ("siteA", "sub-02"), ("siteB", "sub-01"), ("siteB", "sub-10")):
        shutil.copytree(nested / subject, sites / site / subject)
    dm = NiftiDataModule(str(sites), modalities=["FLAIR", "T1"], labels=LABELS, val_subjects=["siteB_sub-01"],
                         image_pattern="{site}/{subject}/{modality}.nii.gz",
                         label_pattern="{site}/{subject}/label.nii.gz", **SMALL)
    subjects = dm.subjects()
    assert list(subjects) == ["siteA_sub-01", "siteA_sub-02", "siteB_sub-01", "siteB_sub-10"]
    assert subjects["siteB_sub-10"].images == (sites / "siteB/sub-10/FLAIR.nii.gz", sites / "siteB/sub-10/T1.nii.gz")
    assert subjects["siteB_sub-10"].label == sites / "siteB/sub-10/label.nii.gz"
    dm.setup("validate")
    np.testing.assert_array_equal(dm.val_set[0]["label"][0].numpy(), raw(nested / "sub-01" / "label.nii.gz"))
    (sites / "siteA/sub-02/T1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"siteA/sub-02/T1\.nii\.gz: file not found \(subject siteA_sub-02 lacks"):
        NiftiDataModule(str(sites), modalities=["FLAIR", "T1"], labels=LABELS, cache_dir=None,
                        image_pattern="{site}/{subject}/{modality}.nii.gz",
                        label_pattern="{site}/{subject}/label.nii.gz").subjects()
    with pytest.raises(ValueError, match=r"label_pattern '\{subject\}/label.nii.gz' must use the placeholders"):
        NiftiDataModule(str(sites), modalities=["T1"], labels=LABELS, image_pattern="{site}/{subject}/{modality}.nii")


def test_a_nifti_folder_the_patterns_miss_says_what_it_holds(tmp_path: Path) -> None:
    """Uncompressed ``.nii`` under the default ``.nii.gz`` patterns: the patterns that find them,
    ready to paste; a modality named otherwise (``T1w`` for ``T1``): some of the files there."""
    nested = write_nifti_folder(tmp_path / "nested")
    plain = tmp_path / "plain"
    for path in sorted(nested.rglob("*.nii.gz")):
        (plain / path.parent.name).mkdir(parents=True, exist_ok=True)
        nib.save(nib.load(path), plain / path.parent.name / path.name.replace(".nii.gz", ".nii"))
    with pytest.raises(DataError, match=r"plain: no subjects found \(expected files like <subject>/FLAIR\.nii\.gz\); "
                                        r"its images end in \.nii: --data\.init_args\.image_pattern "
                                        r"'\{subject\}/\{modality\}\.nii' --data\.init_args\.label_pattern "
                                        r"'\{subject\}/label\.nii'$"):
        NiftiDataModule(str(plain), modalities=["FLAIR", "T1"], labels=LABELS, cache_dir=None).subjects()
    found = NiftiDataModule(str(plain), modalities=["FLAIR", "T1"], labels=LABELS, cache_dir=None,
                            image_pattern="{subject}/{modality}.nii", label_pattern="{subject}/label.nii").subjects()
    assert list(found) == ["sub-01", "sub-02", "sub-03", "sub-10"]  # the suggested patterns work
    with pytest.raises(DataError, match=r"nested: no subjects found \(expected files like <subject>/T1w\.nii\.gz\); "
                                        r"it holds 12 image files, e\.g\. sub-01/FLAIR\.nii\.gz, sub-01/T1\.nii\.gz, "
                                        r"sub-01/label\.nii\.gz$"):
        NiftiDataModule(str(nested), modalities=["T1w"], labels=LABELS, cache_dir=None).subjects()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"it holds no image files$"):
        NiftiDataModule(str(tmp_path / "empty"), modalities=["T1"], labels=LABELS, cache_dir=None).subjects()


def test_nifti_regions_and_ignored_labels(tmp_path: Path) -> None:
    folder = write_nifti_folder(tmp_path)
    dm = NiftiDataModule(str(folder), modalities=["T1"], labels={0: "background", 1: "tissue"}, ignore_labels=[2],
                         regions={"all": [1]}, val_subjects=["sub-01"], **SMALL)
    assert dm.label_space.num_classes == 2 and dm.label_space.structure_classes == {"all": [1]}
    dm.setup("validate")
    label = dm.val_set[0]["label"][0].numpy()
    np.testing.assert_array_equal(label == IGNORE_INDEX, raw(folder / "sub-01" / "label.nii.gz") == 2)


# iSeg-2019.

def test_iseg2019_reads_the_iseg_layout(tmp_path: Path) -> None:
    from conftest import write_iseg_subject

    folder = tmp_path / "iSeg-2019-Training"
    for n in (1, 2, 10):
        write_iseg_subject(folder, n)
    dm = ISeg2019DataModule(str(folder), val_subjects=["subject-10"], **SMALL)
    assert list(dm.subjects()) == ["subject-1", "subject-2", "subject-10"]
    assert list(dm.label_space.class_values) == [0, 10, 150, 250]


# Grids: resampling onto the first modality, to a target spacing, and back.

def test_resample_to_first_maps_a_shifted_modality_through_the_affines(tmp_path: Path) -> None:
    folder = write_nifti_folder(tmp_path)
    flair_path = folder / "sub-02" / "FLAIR.nii.gz"
    flair = nib.load(str(flair_path))
    data = np.asarray(flair.dataobj)
    # The same anatomy on a grid starting two voxels further along x (world positions unchanged).
    shifted_affine = flair.affine.copy()
    shifted_affine[0, 3] += 2 * flair.affine[0, 0]
    nib.save(nib.Nifti1Image(data[2:], shifted_affine), str(flair_path))
    args = {"modalities": ["T1", "FLAIR"], "labels": LABELS, "val_subjects": ["sub-02"], **SMALL}
    with pytest.raises(DataError, match=r"FLAIR\.nii\.gz: shape \(16, 20, 16\) differs from T1\.nii\.gz"):
        NiftiDataModule(str(folder), **args).setup("validate")
    resampled = NiftiDataModule(str(folder), resample_to_first=True, **args)
    resampled.setup("validate")
    nib.save(nib.Nifti1Image(data, flair.affine), str(flair_path))  # the original, on the first grid
    reference = NiftiDataModule(str(folder), **args)
    reference.setup("validate")
    a, b = resampled.val_set[0]["image"][1].numpy(), reference.val_set[0]["image"][1].numpy()
    assert a.shape == b.shape
    raw_a = a[2:] != 0  # the two missing slabs are zero after resampling; elsewhere the same voxels
    np.testing.assert_array_equal(raw_a, b[2:] != 0)
    assert np.corrcoef(a[2:][raw_a], b[2:][raw_a])[0, 1] > 0.999


def test_target_spacing_resamples_and_predictions_return_to_the_scan_grid(tmp_path: Path) -> None:
    from core.export import PredictionFolder, Segmentation

    folder = write_nifti_folder(tmp_path / "data")  # 18 x 20 x 16 voxels of 1.2 x 1.2 x 1.5 mm
    dm = NiftiDataModule(str(folder), modalities=["T1"], labels=LABELS, val_subjects=["sub-01"],
                         target_spacing=(0.6, 0.6, 0.75), **SMALL)
    dm.setup("validate")
    item = dm.val_set[0]
    assert item["image"].shape == (1, 36, 40, 32) and item["label"].shape == (1, 36, 40, 32)
    np.testing.assert_allclose(np.diag(item["affine"].numpy())[:3], [0.6, 0.6, 0.75])
    batch = {k: (v[None] if hasattr(v, "shape") else [v]) for k, v in item.items()}
    prediction = {"subject": batch["subject"], "prediction": batch["label"][:, 0],
                  **{k: batch[k] for k in ("affine", "original_affine", "original_shape")}}

    grids = {k: prediction[k][0].numpy() for k in ("affine", "original_affine", "original_shape")}
    segmentation = Segmentation.from_network_grid(batch["subject"][0], prediction["prediction"][0].numpy(),
                                                  dm.label_space, **grids)
    PredictionFolder(tmp_path / "out").write(segmentation)
    written = nib.load(str(tmp_path / "out" / "sub-01_seg.nii.gz"))
    source = nib.load(str(folder / "sub-01" / "label.nii.gz"))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    # Halving the spacing and coming back by nearest neighbour lands on the original voxels.
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))


def test_n4_and_clipping_run_once_then_come_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.volumes as volumes

    folder = write_nifti_folder(tmp_path / "data", shape=(24, 24, 20))
    calls = []
    n4 = volumes.n4_bias_correction
    monkeypatch.setattr(volumes, "n4_bias_correction", lambda *a, **k: calls.append(a[2]) or n4(*a, **k))
    args = {"modalities": ["T1", "FLAIR"], "labels": LABELS, "val_subjects": ["sub-02"], "n4_bias_correction": True,
            "clip_percentiles": (1.0, 99.0), **{**SMALL, "cache_dir": str(tmp_path / "cache")}}
    first = NiftiDataModule(str(folder), **args)
    first.setup("validate")
    assert [Path(p).name for p in calls] == ["T1.nii.gz", "FLAIR.nii.gz"]
    image = first.val_set[0]["image"].numpy()
    brain = image[0] != 0
    assert abs(image[0][brain].mean()) < 1e-4 and abs(image[0][brain].std() - 1) < 1e-3
    second = NiftiDataModule(str(folder), **args)
    second.setup("validate")
    assert len(calls) == 2  # the second run read the cache
    np.testing.assert_array_equal(second.val_set[0]["image"].numpy(), image)


def test_folders_are_read_by_the_checkpoints_datamodule_with_its_layout_arguments(tmp_path: Path) -> None:
    """predict.py reads a folder by the DataModule a checkpoint names, with the arguments that
    find files (modalities, the dataset's own ones); the run's split and sampling play no part."""
    from datamodules.folders import layout_arguments, subjects_in_folder

    training = write_mrbrains18(tmp_path, ids=("1", "4"))
    saved = {"modalities": ["T1", "FLAIR"], "label_mode": "thesis", "val_subjects": ["148"], "patch_size": [8, 8, 8],
             "cache_dir": "elsewhere", "data_dir": "/old/place"}
    assert layout_arguments(MRBrainS18DataModule, saved) == {"modalities": ["T1", "FLAIR"], "label_mode": "thesis"}
    record = {"class_path": "datamodules.mrbrains18.MRBrainS18DataModule", "init_args": saved}
    subjects = subjects_in_folder(training, record, ["T1", "FLAIR"], "c.ckpt")
    assert [s.subject_id for s in subjects] == ["1", "4"] and all(s.label is None for s in subjects)
    assert subjects[0].images == (training / "1/pre/reg_T1.nii.gz", training / "1/pre/FLAIR.nii.gz")
    with pytest.raises(DataError, match=r"offers modalities \['T1', 'FLAIR'\], c\.ckpt was trained on \['FLAIR'\]"):
        subjects_in_folder(training, record, ["FLAIR"], "c.ckpt")
    with pytest.raises(DataError, match=r"c\.ckpt: records no DataModule"):
        subjects_in_folder(training, None, ["T1"], "c.ckpt")


def test_a_brats_model_reads_the_cases_of_either_naming(tmp_path: Path) -> None:
    """A model trained on 2018-2021 cases (its checkpoint from before label conventions, or one
    with its convention) segments a 2023 validation folder, and the other way round: the
    modalities keep their names in both namings."""
    from datamodules.folders import layout_arguments, subjects_in_folder

    validation = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData"
    write_brats_case(validation, "BraTS-GLI-00001-000", seed=1, with_seg=False, naming=2023)
    older = {"class_path": "datamodules.brats.BraTSDataModule",
             "init_args": {"modalities": ["T1", "T1ce", "T2", "FLAIR"], "region_based": True}}
    (subject,) = subjects_in_folder(validation, older, ["T1", "T1ce", "T2", "FLAIR"], "old.ckpt")
    assert [p.name for p in subject.images] == [f"BraTS-GLI-00001-000-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")]
    saved = {"modalities": ["FLAIR"], "region_based": True, "label_convention": "brats2023", "val_fraction": 0.2}
    assert layout_arguments(BraTSDataModule, saved) == {"modalities": ["FLAIR"], "region_based": True,
                                                        "label_convention": "brats2023"}
    folder = write_brats(tmp_path, 2021, cases=2)
    record = {"class_path": "datamodules.BraTSDataModule", "init_args": saved}
    subjects = subjects_in_folder(folder, record, ["FLAIR"], "new.ckpt")
    assert [s.images[0].name for s in subjects] == ["BraTS2021_00000_flair.nii.gz", "BraTS2021_00001_flair.nii.gz"]


def test_a_modality_or_label_stored_in_another_voxel_order_is_the_same_grid(tmp_path: Path) -> None:
    """A label written RAS beside a scan stored LAS (fMRIPrep conforms its outputs to RAS), or a
    modality stored with its axes permuted: the same voxels, taken back without interpolation and
    without resample_to_first; a grid that differs otherwise is still refused."""
    folder = write_nifti_folder(tmp_path)
    args = {"modalities": ["T1", "FLAIR"], "labels": LABELS, "val_subjects": ["sub-02"], **SMALL}
    reference = NiftiDataModule(str(folder), **args)
    reference.setup("validate")
    expected = reference.val_set[0]
    label_path, flair_path = folder / "sub-02" / "label.nii.gz", folder / "sub-02" / "FLAIR.nii.gz"
    label, flair = nib.load(str(label_path)), nib.load(str(flair_path))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = label.shape[0] - 1  # voxel i -> n-1-i: the same world positions, x stored the other way
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[::-1], label.affine @ flip), str(label_path))
    swap = np.eye(4)[[1, 0, 2, 3]]  # voxel (i, j, k) -> (j, i, k): the first two axes exchanged
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj).transpose(1, 0, 2), flair.affine @ swap), str(flair_path))
    assert nib.aff2axcodes(nib.load(str(label_path)).affine) != nib.aff2axcodes(label.affine)
    reordered = NiftiDataModule(str(folder), **args)
    reordered.setup("validate")
    got = reordered.val_set[0]
    np.testing.assert_array_equal(got["label"].numpy(), expected["label"].numpy())
    np.testing.assert_array_equal(got["image"].numpy(), expected["image"].numpy())
    shifted = label.affine @ flip
    shifted[1, 3] += 3.0  # flipped and 3 mm off: not the same grid
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[::-1], shifted), str(label_path))
    with pytest.raises(DataError, match=r"label\.nii\.gz: affine differs from T1\.nii\.gz's: the same voxel lies up "
                                        r"to 3 mm apart"):
        NiftiDataModule(str(folder), **args).setup("validate")
