import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from datamodules import DataError, ISeg2017DataModule

from conftest import write_analyze, write_iseg_subject


def make_dm(folder: Path, **kwargs) -> ISeg2017DataModule:
    args = {"val_subjects": ["subject-10"], "test_subjects": ["subject-2"], "patch_size": (8, 8, 8),
            "batch_size": 2, "samples_per_volume": 3, "cache_dir": None}
    args.update(kwargs)
    return ISeg2017DataModule(str(folder), **args)


def test_subjects_are_sorted_by_number(iseg_dir: Path) -> None:
    dm = make_dm(iseg_dir)
    assert list(dm.subjects()) == ["subject-1", "subject-2", "subject-3", "subject-4", "subject-10"]
    split = dm.split()
    assert [s.subject_id for s in split["train"]] == ["subject-1", "subject-3", "subject-4"]
    assert [s.subject_id for s in split["val"]] == ["subject-10"]
    assert [s.subject_id for s in split["test"]] == ["subject-2"]


def test_whole_volumes_stack_modalities_in_order_and_map_labels(iseg_dir: Path) -> None:
    dm = make_dm(iseg_dir)
    dm.setup("fit")
    item = dm.val_set[0]
    assert item["subject"] == "subject-10"
    image, label = item["image"].numpy(), item["label"][0].numpy()
    assert image.shape == (2, 16, 20, 24) and label.shape == (16, 20, 24)
    # Analyze stores no orientation; nibabel reads it as LAS and volumes come out RAS+.
    stored = nib.load(str(iseg_dir / "subject-10-label.hdr"))
    assert nib.aff2axcodes(stored.affine) == ("L", "A", "S")
    raw = stored.get_fdata()[::-1]
    expected = np.select([raw == 10, raw == 150, raw == 250], [1, 2, 3], 0)
    np.testing.assert_array_equal(label, expected)
    # Channel 0 is T1 (WM brightest), channel 1 is T2 (CSF brightest); both z-scored.
    t1_wm, t1_csf = image[0][label == 3].mean(), image[0][label == 1].mean()
    t2_wm, t2_csf = image[1][label == 3].mean(), image[1][label == 1].mean()
    assert t1_wm > t1_csf and t2_csf > t2_wm
    for channel in image:
        brain = channel[channel != 0]
        assert abs(brain.mean()) < 1e-4 and abs(brain.std() - 1) < 1e-4
    assert dm.in_channels == 2 and dm.label_space.num_classes == 4
    assert dm.label_space.class_names == ("background", "CSF", "GM", "WM")
    assert dm.label_space.class_values == (0, 10, 150, 250)


def test_modalities_are_selectable(iseg_dir: Path) -> None:
    dm = make_dm(iseg_dir, modalities=["T2"])
    dm.setup("validate")
    assert dm.val_set[0]["image"].shape[0] == 1 and dm.in_channels == 1
    with pytest.raises(ValueError, match=r"unknown modalities \['FLAIR'\]"):
        make_dm(iseg_dir, modalities=["T1", "FLAIR"])


def test_training_patches_hold_foreground(iseg_dir: Path) -> None:
    dm = make_dm(iseg_dir)
    dm.setup("fit")
    assert len(dm.train_set) == 3 * 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 2, 8, 8, 8) and batch["label"].shape == (2, 1, 8, 8, 8)
    assert batch["image"].dtype == torch.float32 and batch["label"].dtype == torch.int64
    assert all((label > 0).any() for label in batch["label"])
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 3}


def test_an_epoch_can_be_a_fixed_number_of_iterations(iseg_dir: Path) -> None:
    """nnU-Net's epochs: 250 batches whatever the dataset; here 7 batches of 2 from 3 subjects,
    the volumes taking turns."""
    dm = make_dm(iseg_dir, iterations_per_epoch=7)
    dm.setup("fit")
    assert len(dm.train_set) == 14 and len(dm.train_dataloader()) == 7
    assert [dm.train_set._volume_index(i) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="iterations_per_epoch must be >= 1"):
        make_dm(iseg_dir, iterations_per_epoch=0)


def test_augmentation_on_the_device_is_one_batched_call_for_the_training_batch(iseg_dir: Path) -> None:
    """``augment_on: device``: the loader hands out plain patches, and the training batch is
    augmented after its transfer by ``Augmentation.batch`` (the loader's steps and options, one
    batched call per step; tests/test_augmentation.py checks it against the patch path) with one
    generator from torch's seeded RNG; validation batches and an unattached module pass through."""
    from types import SimpleNamespace

    from datamodules.patches import worker_rng

    specs = [{"name": "flip", "prob": 0.5}, {"name": "brightness", "prob": 1.0}, {"name": "blur", "prob": 1.0},
             {"name": "elastic", "prob": 1.0, "sigma": [2.0, 2.0], "magnitude": [0.5, 0.5]}]
    dm = make_dm(iseg_dir, augmentation=specs, augment_on="device")
    dm.setup("fit")
    assert dm.train_set.augment is None
    batch = next(iter(dm.train_dataloader()))
    assert dm.on_after_batch_transfer(batch, 0) is batch  # no trainer yet
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer(batch, 0) is batch  # validation
    dm.trainer = SimpleNamespace(training=True)
    before = {key: value.clone() for key, value in batch.items() if isinstance(value, torch.Tensor)}
    torch.manual_seed(7)
    with pytest.warns(UserWarning, match="augment_on: device, but the model trains on the CPU"):
        out = dm.on_after_batch_transfer(batch, 0)
    torch.manual_seed(7)
    expected_image, expected_label = dm.augment.batch(batch["image"], batch["label"], worker_rng())
    torch.testing.assert_close(out["image"], expected_image)
    assert torch.equal(out["label"], expected_label)
    assert all(torch.equal(batch[key], value) for key, value in before.items())  # the loader's batch untouched
    assert out["image"].shape == batch["image"].shape and out["label"].dtype == torch.int64
    assert not torch.equal(out["image"], batch["image"])  # brightness and blur always fire
    torch.manual_seed(8)
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)["image"], out["image"])  # seeded from torch's RNG
    with pytest.raises(ValueError, match="augment_on must be 'loader' or 'device'"):
        make_dm(iseg_dir, augment_on="gpu")


def test_test_and_predict_use_the_held_out_subjects(iseg_dir: Path, tmp_path: Path) -> None:
    dm = make_dm(iseg_dir)
    dm.setup("test")
    assert [dm.test_set[i]["subject"] for i in range(len(dm.test_set))] == ["subject-2"]
    unlabelled = tmp_path / "iSeg-2017-Testing"
    write_iseg_subject(unlabelled, 11)
    (unlabelled / "subject-11-label.hdr").unlink()
    (unlabelled / "subject-11-label.img").unlink()
    dm = make_dm(iseg_dir, predict_dir=str(unlabelled))
    dm.setup("predict")
    item = dm.predict_set[0]
    assert item["subject"] == "subject-11" and "label" not in item
    with pytest.raises(DataError, match="Testing2: dataset folder not found"):
        make_dm(iseg_dir, predict_dir=str(tmp_path / "Testing2")).setup("predict")


# Bad input: each case names the file and the problem.

def test_missing_modality(iseg_dir: Path) -> None:
    (iseg_dir / "subject-3-T2.hdr").unlink()
    with pytest.raises(DataError, match=r"subject-3-T2\.hdr: file not found"):
        make_dm(iseg_dir).subjects()


def test_missing_img_half_of_an_analyze_pair(iseg_dir: Path) -> None:
    (iseg_dir / "subject-4-label.img").unlink()
    with pytest.raises(DataError, match=r"subject-4-label\.img: file not found \(Analyze needs"):
        make_dm(iseg_dir).subjects()


def test_modality_shape_mismatch(iseg_dir: Path) -> None:
    write_analyze(np.ones((16, 20, 23), np.int16), iseg_dir / "subject-10-T2.hdr")
    with pytest.raises(DataError, match=r"subject-10-T2\.hdr: shape \(16, 20, 23\) differs from subject-10-T1"):
        make_dm(iseg_dir).setup("validate")


def test_label_shape_mismatch(iseg_dir: Path) -> None:
    write_analyze(np.zeros((16, 20, 20), np.uint8), iseg_dir / "subject-10-label.hdr")
    with pytest.raises(DataError, match=r"subject-10-label\.hdr: shape"):
        make_dm(iseg_dir).setup("validate")


def test_affine_mismatch(iseg_dir: Path) -> None:
    t2 = nib.load(str(iseg_dir / "subject-10-T2.hdr")).get_fdata().astype(np.int16)
    write_analyze(t2, iseg_dir / "subject-10-T2.hdr", zooms=(1.0, 1.0, 2.0))
    with pytest.raises(DataError, match=r"subject-10-T2\.hdr: affine differs"):
        make_dm(iseg_dir).setup("validate")


def test_label_values_outside_the_map(iseg_dir: Path) -> None:
    label = nib.load(str(iseg_dir / "subject-10-label.hdr")).get_fdata().astype(np.uint8)
    label[5, 5, 5] = 200
    write_analyze(label, iseg_dir / "subject-10-label.hdr")
    with pytest.raises(DataError, match=r"subject-10-label\.hdr: label values \[200\] are not in"):
        make_dm(iseg_dir).setup("validate")


def test_nan_voxels(iseg_dir: Path) -> None:
    t1 = nib.load(str(iseg_dir / "subject-10-T1.hdr")).get_fdata().astype(np.float32)
    t1[3, 3, 3] = np.nan
    write_analyze(t1, iseg_dir / "subject-10-T1.hdr")
    with pytest.raises(DataError, match=r"subject-10-T1\.hdr: 1 voxels are NaN or infinite"):
        make_dm(iseg_dir).setup("validate")


def test_truncated_image(iseg_dir: Path) -> None:
    path = iseg_dir / "subject-10-T1.img"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"subject-10-T1\.hdr: cannot read the image"):
        make_dm(iseg_dir).setup("validate")


def test_empty_or_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no iSeg subjects found"):
        make_dm(tmp_path).subjects()
    with pytest.raises(DataError, match="missing: dataset folder not found"):
        make_dm(tmp_path / "missing").subjects()


def test_unknown_held_out_subject_and_leaked_test_subject(iseg_dir: Path) -> None:
    with pytest.raises(DataError, match=r"validation subjects \['9'\] not found; available"):
        make_dm(iseg_dir, val_subjects=["9"]).split()
    with pytest.raises(DataError, match=r"\['subject-2'\] are in both the training and the test set"):
        make_dm(iseg_dir, train_subjects=["subject-1", "subject-2"]).split()


def test_ids_are_strings_numbers_only_order_them(tmp_path: Path) -> None:
    """``subject-2`` and ``subject-02`` are two subjects (once, one was silently dropped)."""
    folder = tmp_path / "iSeg-2017-Training"
    for n in (1, 2, 3, 10):
        write_iseg_subject(folder, n)
    for part in ("T1", "T2", "label"):
        for suffix in (".hdr", ".img"):
            shutil.copy(folder / f"subject-3-{part}{suffix}", folder / f"subject-02-{part}{suffix}")
    subjects = ISeg2017DataModule(str(folder), cache_dir=None).subjects()
    assert list(subjects) == ["subject-1", "subject-02", "subject-2", "subject-3", "subject-10"]
    assert subjects["subject-02"].images[0] == folder / "subject-02-T1.hdr"
    assert subjects["subject-2"].images[0] == folder / "subject-2-T1.hdr"


def test_training_subjects_without_the_others_zero_background_are_said_at_setup(iseg_dir: Path) -> None:
    """Of the training subjects 1, 3, 4 (half their voxels 0), subject-3's T1 with small values in
    its background (registration's ringing) is named, with its share and the others' median; its
    T2 and a clean dataset get no warning."""
    from core.io import DataWarning
    from core.modality_profiles import background_outliers

    assert background_outliers({"a": [0.5], "b": [0.4]}, ["T1"]) == []  # two subjects: no median to go by
    assert background_outliers({"a": [0.5], "b": [0.4], "c": [0.1]}, ["T1"]) == []  # a quarter of 0.4 is 0.1
    assert background_outliers({"a": [0.03], "b": [0.04], "c": [0.0]}, ["T1"]) == []  # no zero background
    (line,) = background_outliers({f"s{n}": [0.5, 0.5] for n in range(8)} | {"odd": [0.02, 0.5]}, ["T1", "T2"],
                                  shown=2)
    assert line.startswith("1 of 9 training subjects have almost no T1 voxels at 0, where the others' median is 50% "
                           "(a skull-stripped scan's background): odd (2.0%); their background is normalised")
    many = background_outliers({f"s{n}": [0.5] for n in range(5)} | {f"odd{n}": [0.0] for n in range(4)}, ["T1"],
                               shown=2)
    assert many[0].split(": ")[1].startswith("odd0 (0.0%), odd1 (0.0%) and 2 more;")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        make_dm(iseg_dir).setup("fit")
    assert [w for w in said if issubclass(w.category, DataWarning)] == []
    image = nib.load(iseg_dir / "subject-3-T1.hdr")
    data = np.asarray(image.dataobj).astype(np.float32)
    data[data == 0] = np.random.default_rng(0).normal(0, 0.5, int((data == 0).sum()))
    write_analyze(data, iseg_dir / "subject-3-T1.hdr")
    with pytest.warns(DataWarning, match=rf"^{iseg_dir}: 1 of 3 training subjects have almost no T1 voxels at 0, where "
                                         r"the others' median is 50% \(a skull-stripped scan's background\): subject-3 "
                                         r"\(0\.0%\); their background is normalised and learned as brain") as said:
        make_dm(iseg_dir).setup("fit")
    assert not [w for w in said if "T2 voxels" in str(w.message)]
