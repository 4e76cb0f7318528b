"""Every DataModule feeds ``train.py fit`` (one epoch) on its layout, through its dataset config."""

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from layouts import write_brats, write_decathlon, write_freesurfer, write_mrbrains18, write_nifti_folder, write_nnunet

from train import run_cli

from conftest import write_iseg_subject


def iseg(root: Path, year: int) -> Path:
    folder = root / f"iSeg-{year}-Training"
    for n in range(1, 6):
        write_iseg_subject(folder, n, shape=(20, 20, 20))
    return folder


LAYOUTS: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "iseg2017": (lambda r: iseg(r, 2017), ["--data.init_args.val_subjects", "[subject-2]",
                                           "--data.init_args.test_subjects", "[subject-5]"]),
    "iseg2019": (lambda r: iseg(r, 2019), []),
    "mrbrains18": (write_mrbrains18, []),
    "brats": (lambda r: write_brats(r, 2019), ["--data.init_args.clip_percentiles", "[1, 99]"]),
    "decathlon": (write_decathlon, []),
    "nifti": (write_nifti_folder, []),
    "nnunet": (write_nnunet, []),
    "freesurfer": (lambda r: write_freesurfer(r / "subjects"), []),
}


@pytest.mark.parametrize("dataset", list(LAYOUTS))
def test_one_epoch_fit_on_each_layout(dataset: str, tmp_path: Path) -> None:
    write, extra = LAYOUTS[dataset]
    data_dir = write(tmp_path / "data")
    cli = run_cli([
        "fit", "--config", f"configs/datasets/{dataset}.yaml",
        "--data.init_args.data_dir", str(data_dir),
        "--data.init_args.patch_size", "[16, 16, 8]",
        "--data.init_args.batch_size", "2",
        "--data.init_args.samples_per_volume", "2",
        "--data.init_args.num_workers", "0",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.augmentation", "[{name: flip}]",
        "--model.network_kwargs", "{base_features: 2}",
        "--model.sw_batch_size", "4",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(tmp_path / "logs"),
        "--checkpoint.dirpath", str(tmp_path / "checkpoints"),
        *extra,
    ])
    dm, model = cli.datamodule, cli.model
    assert model.hparams.in_channels == dm.in_channels and model.labels == dm.label_space
    assert cli.trainer.current_epoch == 1 and cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/dice_mean" in metrics
    for region in model.labels.structure_names:
        assert f"val/dice_{region}" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    split = json.loads(next((tmp_path / "logs").rglob("split.json")).read_text())
    assert split["val"] == [s.subject_id for s in dm.split()["val"]] and split["val"]
    assert not set(split["train"]) & set(split["val"] + split["test"])
    assert any((tmp_path / "cache").iterdir())  # preprocessed volumes cached on disk
    if dataset == "brats":
        assert model.labels.structure_names == ["WT", "TC", "ET"]
        assert model.hparams.label_space["regions"] == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    if dataset == "freesurfer":  # predict.py reads a SUBJECTS_DIR by the checkpoint's DataModule
        from predict import predict

        (written,) = predict(tmp_path / "checkpoints" / "last.ckpt", [data_dir], tmp_path / "out", subjects=["sub-10"])
        image = nib.load(str(written))
        assert written.name == "sub-10_seg.nii.gz" and nib.aff2axcodes(image.affine) == ("L", "I", "A")
        assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= {0, 2, 3, 24}
    if dataset == "nnunet":  # nnU-Net's region labels, painted back in regions_class_order
        assert model.labels.structure_names == ["whole tumor", "tumor core", "enhancing tumor"]
        assert model.hparams.label_space["regions"] == {"whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                                        "enhancing tumor": [3]}
        assert dm.modalities == ("T1", "T1ce", "T2", "Flair") and model.hparams.in_channels == 4


@pytest.mark.parametrize("year", [2021, 2024])
def test_predictions_go_back_to_the_scans_own_space(tmp_path: Path, year: int) -> None:
    """BraTS files are stored flipped; predictions come out reoriented and are written back
    exactly onto the scan's grid, in the release's values (2024 post-treatment: enhancing tumour
    3, the cavity 4): writing the ground truth as the "prediction" reproduces it."""
    from core.export import PredictionFolder, Segmentation
    from datamodules import BraTSDataModule

    folder = write_brats(tmp_path, year, cases=2)
    case = "BraTS2021_00001" if year == 2021 else "BraTS-GLI-02000-100"
    convention = "auto" if year == 2021 else "brats_post_treatment"
    dm = BraTSDataModule(str(folder), val_subjects=[case], cache_dir=None, target_spacing=None,
                         label_convention=convention)
    dm.setup("validate")
    item = dm.val_set[0]
    batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in item.items()}
    prediction = {"subject": batch["subject"], "prediction": batch["label"][:, 0], "affine": batch["affine"],
                  "original_affine": batch["original_affine"], "original_shape": batch["original_shape"]}

    grids = {k: prediction[k][0].numpy() for k in ("affine", "original_affine", "original_shape")}
    segmentation = Segmentation.from_network_grid(batch["subject"][0], prediction["prediction"][0].numpy(),
                                                  dm.label_space, **grids)
    PredictionFolder(tmp_path / "out").write(segmentation)
    written = nib.load(str(tmp_path / "out" / f"{case}_seg.nii.gz"))
    source = nib.load(str(next((folder / case).glob("*seg.nii.gz"))))
    assert set(np.unique(np.asarray(source.dataobj))) == ({0, 1, 2, 4} if year == 2021 else {0, 1, 2, 3, 4})
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))


def test_a_freesurfer_tissue_map_goes_back_onto_the_conformed_grid_and_scores_against_aseg(tmp_path: Path) -> None:
    """The ground truth's tissue classes written as a "prediction" of a SUBJECTS_DIR subject: on
    the LIA grid of its ``.mgz`` in FreeSurfer's values (CSF 24, GM 3, WM 2), and ``evaluate.py
    --dataset freesurfer_tissues`` scores it against the subject's ``aseg.mgz`` (no volume needed):
    Dice 1 for each tissue; the same in ``label_mode: aseg`` for its 45 structures."""
    from core.export import PredictionFolder, Segmentation
    from core.labels import IGNORE_INDEX
    from datamodules import FreeSurferDataModule
    from evaluate import evaluate_folders

    root = write_freesurfer(tmp_path / "subjects")
    dm = FreeSurferDataModule(str(root), val_subjects=["sub-03"], cache_dir=None)
    dm.setup("validate")
    item = dm.val_set[0]
    classes = item["label"][0].numpy().copy()
    classes[classes == IGNORE_INDEX] = 0  # ventral DC: no tissue to write
    grids = {k: item[k].numpy() for k in ("affine", "original_affine", "original_shape")}
    PredictionFolder(tmp_path / "out").write(Segmentation.from_network_grid("sub-03", classes, dm.label_space, **grids))
    written = nib.load(str(tmp_path / "out" / "sub-03_seg.nii.gz"))
    aseg = nib.load(str(root / "sub-03" / "mri" / "aseg.mgz"))
    np.testing.assert_allclose(written.affine, aseg.affine)
    values = np.asarray(aseg.dataobj)
    assert np.all(np.asarray(written.dataobj)[np.isin(values, [3, 42, 10, 49])] == 3)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) == {0, 2, 3, 24}
    # label_mode aseg: every structure written back as its aseg value.
    structures = FreeSurferDataModule(str(root), val_subjects=["sub-03"], cache_dir=None, label_mode="aseg")
    structures.setup("validate")
    item = structures.val_set[0]
    grids = {k: item[k].numpy() for k in ("affine", "original_affine", "original_shape")}
    PredictionFolder(tmp_path / "aseg").write(Segmentation.from_network_grid(
        "sub-03", item["label"][0].numpy(), structures.label_space, **grids))
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "aseg" / "sub-03_seg.nii.gz")).dataobj), values)
    for subject in root.glob("sub-*"):  # scored against the label maps alone: no volume needed
        (subject / "mri" / "norm.mgz").unlink()
    rows = evaluate_folders(tmp_path / "out", root, "freesurfer_tissues")
    assert [(r["subject"], r["structure"], r["dice"]) for r in rows] == [
        ("sub-03", tissue, 1.0) for tissue in ("CSF", "GM", "WM")]
    rows = evaluate_folders(tmp_path / "aseg", root, "freesurfer_aseg")
    assert len(rows) == 45 and {r["dice"] for r in rows} == {1.0}
    assert {"Right-VentralDC", "Right-Thalamus", "Brain-Stem"} <= {r["structure"] for r in rows}


def test_logged_test_dice_is_the_mean_of_metrics_csv_on_a_case_without_enhancing_tumour(tmp_path: Path) -> None:
    """Region Dice as logged by ``test`` = the mean over subjects of metrics.csv (evaluate.py's
    code), also for a case whose ground truth has no ET: 1 if none is predicted, 0 if some is,
    never NaN left out of the mean."""
    import csv

    folder = write_brats(tmp_path / "data", 2019)
    seg_path = folder / "HGG" / "Brats19_2013_0_1" / "Brats19_2013_0_1_seg.nii.gz"
    seg = nib.load(str(seg_path))
    no_et = np.asarray(seg.dataobj).copy()
    no_et[no_et == 4] = 1
    nib.save(nib.Nifti1Image(no_et, seg.affine), str(seg_path))
    common = ["--config", "configs/datasets/brats.yaml", "--data.init_args.data_dir", str(folder),
              "--data.init_args.patch_size", "[16, 16, 8]", "--data.init_args.num_workers", "0",
              "--data.init_args.cache_dir", "null",
              "--data.init_args.val_fraction", "null", "--data.init_args.val_subjects", "[Brats19_2013_2_1]",
              "--data.init_args.test_subjects", "[Brats19_2013_0_1, Brats19_2013_1_1]",
              "--data.init_args.crop_to_nonzero", "true",
              "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    run_cli(["fit", *common, "--model.network_kwargs", "{base_features: 2}", "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "2", "--trainer.num_sanity_val_steps", "0",
             "--checkpoint.dirpath", str(tmp_path / "checkpoints")])
    cli = run_cli(["test", *common, "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"),
                   "--test_report.output_dir", str(tmp_path / "test"), "--test_report.save_png", "false",
                   "--test_report.lesion_wise", "BraTS-GLI"])
    with open(tmp_path / "test" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({row["subject"] for row in rows}) == ["Brats19_2013_0_1", "Brats19_2013_1_1"]
    (et_without,) = [float(r["dice"]) for r in rows if r["subject"] == "Brats19_2013_0_1" and r["structure"] == "ET"]
    assert et_without in (0.0, 1.0)
    logged = cli.trainer.callback_metrics
    for structure in ("WT", "TC", "ET"):
        scores = [float(r["dice"]) for r in rows if r["structure"] == structure]
        assert logged[f"test/dice_{structure}"].item() == pytest.approx(np.mean(scores), abs=1e-5)
    # Lesion-wise (--test_report.lesion_wise): each case's one tumour is a lesion of WT; the case
    # without ET has no ET lesion, so its lesion-wise ET Dice is 1 with no spurious component, else 0.
    assert all(r["lesions"] == "1" for r in rows if r["structure"] == "WT")
    (no_et,) = [r for r in rows if r["subject"] == "Brats19_2013_0_1" and r["structure"] == "ET"]
    assert no_et["lesions"] == "0" and float(no_et["lesion_dice"]) == (1.0 if no_et["false_positives"] == "0" else 0.0)
    # Every case cut to its brain's box (crop_to_nonzero); the report still scores as evaluate.py does on the
    # whole scan, every metric (a structure on one side only: the scan's diagonal, not the box's).
    import evaluate
    from core.metrics import volume_diagonal
    from predict import predict

    case = folder / "HGG" / "Brats19_2013_0_1"
    files = [case / f"Brats19_2013_0_1_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    predict(tmp_path / "checkpoints" / "last.ckpt", files, tmp_path / "pred")
    rows = [r for r in rows if r["subject"] == "Brats19_2013_0_1"]
    scored = evaluate.evaluate_folders(tmp_path / "pred", folder, "brats")
    assert [r["structure"] for r in scored] == [r["structure"] for r in rows] == ["WT", "TC", "ET"]
    for ours, theirs in zip(rows, scored, strict=True):
        for column in ("dice", "hd95_mm", "assd_mm", "avd_percent", "sensitivity"):
            assert float(ours[column]) == pytest.approx(theirs[column], abs=1e-4, nan_ok=True), (ours, column)
    one_sided = volume_diagonal(seg.shape, seg.header.get_zooms())
    assert float(no_et["hd95_mm"]) == (pytest.approx(one_sided) if float(no_et["dice"]) == 0.0 else 0.0)
