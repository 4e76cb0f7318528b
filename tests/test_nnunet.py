"""nnU-Net v2 raw datasets in and out: dataset.json's channels and (region) labels, NIfTI and
NRRD cases, nnU-Net's prediction names; the demo converted to the format trains and is scored."""

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import NNUNET_BRATS, write_image, write_nnunet

from benchmarks.nnunet_dataset import main as export_to_nnunet
from core.export import is_our_prediction
from core.io import DataError
from core.nnunet import channel_modalities, nnunet_label_space
from datamodules import NnUNetDataModule

SMALL = {"patch_size": (8, 8, 8), "cache_dir": None, "val_subjects": ["BraTS2021_00001"]}


def test_region_labels_paint_back_in_regions_class_order() -> None:
    space = nnunet_label_space(NNUNET_BRATS["labels"], NNUNET_BRATS["regions_class_order"], "dataset.json")
    assert space.structure_names == ["whole tumor", "tumor core", "enhancing tumor"]
    assert space.class_values == (0, 1, 2, 3)
    assert [space.class_values[c] for c in space.paint_classes] == [1, 2, 3]
    # a voxel in whole tumour and tumour core only is painted 2, as nnU-Net paints it
    regions = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=bool)  # per voxel: WT, TC, ET
    painted = np.zeros(len(regions), dtype=np.int64)
    for value, on in zip(NNUNET_BRATS["regions_class_order"], regions.T, strict=True):
        painted[on] = value
    classes = np.zeros(len(regions), dtype=np.int64)
    for c, on in zip(space.paint_classes, regions.T, strict=True):
        classes[on] = c
    assert space.decode(classes).tolist() == painted.tolist() == [2, 1, 3, 0]


def test_plain_labels_and_the_ignore_label() -> None:
    space = nnunet_label_space({"background": 0, "GM": 2, "CSF": 1, "ignore": 3}, None, "d.json")
    assert space.class_names == ("background", "CSF", "GM") and space.ignored_values == [3]
    assert not space.region_based


@pytest.mark.parametrize(("labels", "order", "message"), [
    ({"background": 1, "a": 0}, None, "'background' to 0"),
    (NNUNET_BRATS["labels"], None, "need regions_class_order"),
    (NNUNET_BRATS["labels"], [3, 2, 1], "paint the values [1, 2, 3] in order, regions_class_order says [3, 2, 1]"),
    (NNUNET_BRATS["labels"], [1, 2, 2], "must list each label value [1, 2, 3] once"),
])
def test_label_mistakes_name_the_file(labels: dict, order: list | None, message: str) -> None:
    with pytest.raises(DataError, match="^d.json: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        nnunet_label_space(labels, order, "d.json")


def test_channel_names_in_channel_order_and_repeated_names_numbered() -> None:
    assert channel_modalities({"1": "T2", "0": "T1"}, "d") == ("T1", "T2")
    assert channel_modalities({"0": "MRI", "1": "MRI", "2": "CT"}, "d") == ("MRI_0000", "MRI_0001", "CT")
    with pytest.raises(DataError, match="number the channels 0..1"):
        channel_modalities({"0": "T1", "2": "T2"}, "d")


def test_cases_channels_and_labels_are_read_from_the_layout(tmp_path: Path) -> None:
    folder = write_nnunet(tmp_path)
    dm = NnUNetDataModule(str(folder), modalities=["Flair", "T1ce"], **SMALL)
    subjects = dm.subjects()
    assert list(subjects) == [f"BraTS2021_{n:05d}" for n in range(4)]
    first = subjects["BraTS2021_00000"]
    assert [p.name for p in first.images] == ["BraTS2021_00000_0003.nii.gz", "BraTS2021_00000_0001.nii.gz"]
    assert first.label == folder / "labelsTr" / "BraTS2021_00000.nii.gz"
    dm.setup("fit")
    assert len(dm.train_set) > 0
    volume = dm._load([first])[0]
    assert volume.image.shape[0] == 2 and set(np.unique(volume.label).tolist()) == {0, 1, 2, 3}
    dm.setup("predict")  # without predict_dir: the test subjects (none here); with it, imagesTs
    assert dm.predict_subjects == []
    predict = NnUNetDataModule(str(folder), predict_dir=str(folder), **SMALL)
    predict.setup("predict")
    assert [s.subject_id for s in predict.predict_subjects] == ["BraTS2021_00004"]
    assert predict.output_names.files("BraTS2021_00004") == ["BraTS2021_00004.nii.gz"]


def test_nrrd_cases_read_as_their_nifti_twins(tmp_path: Path) -> None:
    nifti = NnUNetDataModule(str(write_nnunet(tmp_path / "a")), **SMALL)
    nrrd = NnUNetDataModule(str(write_nnunet(tmp_path / "b", file_ending=".nrrd")), **SMALL)
    (a,), (b,) = (dm._load([dm.subjects()["BraTS2021_00002"]]) for dm in (nifti, nrrd))
    assert nrrd.subjects()["BraTS2021_00002"].images[0].name == "BraTS2021_00002_0000.nrrd"
    np.testing.assert_allclose(b.image, a.image, atol=1e-5)
    np.testing.assert_array_equal(b.label, a.label)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)


def test_nrrd_and_metaimage_label_maps_score_as_their_nifti_twins(tmp_path: Path) -> None:
    """evaluate.py reads label maps as training reads them: an nnU-Net dataset of ``.nrrd`` cases
    is the ground truth, ``.nrrd`` (or ``.mha``) predictions are scored, and a flat folder of
    ``.mha`` label maps is one too; the same numbers as their NIfTI twins (the labels of a
    dataset of ``.nii.gz`` cases, one voxel of each case's prediction changed)."""
    import evaluate
    from core.io import load_volume

    nifti, nrrd = write_nnunet(tmp_path / "a"), write_nnunet(tmp_path / "b", file_ending=".nrrd")
    as_nifti, as_itk, flat_mha = (tmp_path / name for name in ("pred_nii", "pred_itk", "flat_mha"))
    for folder in (as_nifti, as_itk, flat_mha):
        folder.mkdir()
    for case in sorted(p.name[:-len(".nii.gz")] for p in (nifti / "labelsTr").iterdir()):
        label, affine = load_volume(nifti / "labelsTr" / f"{case}.nii.gz")
        changed = label.astype(np.uint8)
        changed.flat[changed.size // 2] = (changed.flat[changed.size // 2] + 1) % 4  # another label's value there
        nib.save(nib.Nifti1Image(changed, affine), as_nifti / f"{case}.nii.gz")
        for path in (as_itk / f"{case}.nrrd", flat_mha / f"{case}.mha"):
            written = write_image(changed if path.parent == as_itk else label.astype(np.uint8), path,
                                  np.abs(np.diag(affine))[:3])
            np.testing.assert_array_equal(load_volume(written)[0], changed if path.parent == as_itk else label)
    reference = evaluate.evaluate_folders(as_nifti, nifti, "nnunet")
    assert len(reference) == 12 and min(row["dice"] for row in reference) < 1
    for pred, truth in ((as_nifti, nrrd), (as_itk, nrrd), (as_itk, nifti)):
        rows = evaluate.evaluate_folders(pred, truth, "nnunet")
        assert [(r["subject"], r["structure"], r["dice"], r["hd95_mm"]) for r in rows] == [
            (r["subject"], r["structure"], r["dice"], r["hd95_mm"]) for r in reference], (pred.name, truth.name)
    shutil.copy(nifti / "dataset.json", tmp_path / "dataset.json")  # the labels of the flat folder's parent
    flat = evaluate.evaluate_folders(as_nifti, flat_mha, "nnunet")
    assert [r["dice"] for r in flat] == [r["dice"] for r in reference]


def test_a_missing_channel_a_label_without_image_and_a_wrong_count_are_named(tmp_path: Path) -> None:
    folder = write_nnunet(tmp_path)
    (folder / "imagesTr" / "BraTS2021_00002_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"BraTS2021_00002_0001.nii.gz: file not found \(case BraTS2021_00002 lacks "
                                        r"channel 1, T1ce\)"):
        NnUNetDataModule(str(folder), **SMALL).subjects()
    assert NnUNetDataModule(str(folder), modalities=["T1"], **SMALL).subjects()  # T1ce not asked for
    for channel in range(4):
        (folder / "imagesTr" / f"BraTS2021_00002_{channel:04d}.nii.gz").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"labelsTr: label maps without images: \['BraTS2021_00002.nii.gz'\]"):
        NnUNetDataModule(str(folder), **SMALL).subjects()
    (folder / "labelsTr" / "BraTS2021_00002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"dataset.json: numTraining is 4, .*imagesTr holds 3 cases"):
        NnUNetDataModule(str(folder), **SMALL).subjects()


def test_a_dataset_json_that_is_not_nnunets_is_one_line(tmp_path: Path) -> None:
    folder = write_nnunet(tmp_path)
    description = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**description, "file_ending": ".png"}))
    with pytest.raises(DataError, match=r"file_ending '.png' is not a 3D format read here"):
        NnUNetDataModule(str(folder), **SMALL)
    del description["file_ending"]
    (folder / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DataError, match=r"dataset.json: missing keys \['file_ending'\]"):
        NnUNetDataModule(str(folder), **SMALL)


def test_the_demo_converted_to_nnunet_trains_predicts_in_nnunet_names_and_scores(
        tiny_demo_dir: Path, tmp_path: Path) -> None:
    """benchmarks/nnunet_dataset.py writes the demo as nnU-Net's raw format; train.py fits it
    through NnUNetDataModule, predict.py segments imagesTs/ with the checkpoint alone (no
    dataset.json beside the cases) into nnU-Net's <case>.nii.gz, and evaluate.py scores them."""
    import evaluate
    import predict
    from train import run_cli

    def train(subcommand: str, *extra: str) -> None:
        run_cli([subcommand, "--config", "configs/datasets/nnunet.yaml", "--data.init_args.data_dir", str(dataset),
                 "--data.init_args.val_subjects", "[subject-3]", "--data.init_args.val_fraction", "0",
                 "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.samples_per_volume", "2",
                 "--data.init_args.num_workers", "0", "--data.init_args.cache_dir", "null",
                 "--model.network_kwargs", "{base_features: 2}", "--trainer.max_epochs", "1",
                 "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path), *extra],
                save_config=False)

    raw = tmp_path / "raw"
    export_to_nnunet([str(tiny_demo_dir), str(raw), "--subjects", "1", "2", "3", "--test-subjects", "4"])
    dataset = raw / "Dataset001_Demo"
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["subject-4_0000.nii.gz",
                                                                          "subject-4_0001.nii.gz"]
    train("fit", "--checkpoint.dirpath", str(tmp_path / "checkpoints"))
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    train("predict", "--ckpt_path", str(checkpoint), "--data.init_args.predict_dir", str(dataset),
          "--prediction_writer.output_dir", str(tmp_path / "cli"))
    cases = tmp_path / "cases"  # imagesTs alone, as nnUNetv2_predict -i takes it
    (dataset / "imagesTs").rename(cases)
    written = predict.predict(checkpoint, [cases], tmp_path / "pred")
    assert [p.name for p in written] == ["subject-4.nii.gz"] and is_our_prediction(written[0])
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["predictions.jsonl", "subject-4.nii.gz",
                                                                    "volumes.csv"]
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "cli" / "subject-4.nii.gz").dataobj),
                                  np.asarray(nib.load(written[0]).dataobj))
    prediction, truth = nib.load(written[0]), nib.load(dataset / "labelsTs" / "subject-4.nii.gz")
    assert prediction.shape == truth.shape and np.allclose(prediction.affine, truth.affine)
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1, 2, 3}
    assert evaluate.main(["--pred", str(tmp_path / "pred"), "--gt", str(dataset / "labelsTs"), "--dataset",
                          "labels", "--labels", "1:CSF,2:GM,3:WM", "--require-all"]) == 0
    with open(tmp_path / "pred" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["subject"], r["structure"]) for r in rows] == [("subject-4", s) for s in ("CSF", "GM", "WM")]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    # The dataset's own labels, from the dataset.json beside labelsTs: the same scores, typed by no one.
    assert evaluate.main(["--pred", str(tmp_path / "pred"), "--gt", str(dataset / "labelsTs"), "--dataset", "nnunet",
                          "--require-all", "--output", str(tmp_path / "by_json")]) == 0
    with open(tmp_path / "by_json" / "scores.csv") as handle:
        assert list(csv.DictReader(handle)) == rows


def test_evaluate_scores_an_nnunet_dataset_by_its_own_labels_and_regions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate.py --dataset nnunet`` takes the structures from dataset.json: BraTS' regions
    (whole tumour, tumour core, enhancing tumour) for a region-based dataset, whether ``--gt`` is
    the dataset folder (its labelsTr, read by the DataModule) or labelsTr itself; a folder with
    no dataset.json near it is one line."""
    import evaluate

    folder = write_nnunet(tmp_path, cases=3)
    truths = [np.asarray(nib.load(folder / "labelsTr" / f"BraTS2021_0000{n}.nii.gz").dataobj) for n in (0, 1)]
    assert (truths[1] == 3).any() and (truths[1] == 2).any()
    predictions = tmp_path / "pred"
    predictions.mkdir()
    affine = nib.load(folder / "labelsTr" / "BraTS2021_00000.nii.gz").affine
    nib.save(nib.Nifti1Image(truths[0], affine), predictions / "BraTS2021_00000.nii.gz")  # perfect
    nib.save(nib.Nifti1Image(np.where(truths[1] == 3, 2, truths[1]).astype(truths[1].dtype), affine),
             predictions / "BraTS2021_00001.nii.gz")  # enhancing tumour called necrosis: ET missed, TC and WT whole
    for gt, output in ((folder, tmp_path / "folder"), (folder / "labelsTr", tmp_path / "flat")):
        assert evaluate.main(["--pred", str(predictions), "--gt", str(gt), "--dataset", "nnunet",
                              "--output", str(output)]) == 0
        assert "not predicted in" in capsys.readouterr().out  # BraTS2021_00002
        with open(output / "scores.csv") as handle:
            dice = {(r["subject"], r["structure"]): float(r["dice"]) for r in csv.DictReader(handle)}
        regions = ("whole tumor", "tumor core", "enhancing tumor")
        assert list(dice) == [(f"BraTS2021_0000{n}", r) for n in (0, 1) for r in regions]
        assert [dice["BraTS2021_00000", r] for r in regions] == [1.0, 1.0, 1.0]
        assert [dice["BraTS2021_00001", r] for r in regions] == [1.0, 1.0, 0.0]
    alone = tmp_path / "alone" / "labels"
    alone.parent.mkdir()
    (folder / "labelsTr").rename(alone)
    assert evaluate.main(["--pred", str(predictions), "--gt", str(alone), "--dataset", "nnunet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"evaluate.py: error: {alone}: no dataset.json in it or its parent") and "\n" not in error
