"""crop_to_nonzero: volumes cut to the box of their non-zero or labelled voxels (nnU-Net's), and
predictions put back on the whole scan exactly, background outside the box."""

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.export import Segmentation
from core.labels import LabelSpace
from core.planning import describe_fingerprint, fingerprint
from core.volumes import PreprocessingSettings, Subject, crop_to_nonzero, load_subject, nonzero_box
from datamodules.cache import cache_key

LABELS = LabelSpace.from_values({0: "background", 10: "CSF", 150: "GM", 250: "WM"})
SHAPE = (20, 24, 18)
AFFINE = np.array([[-1.2, 0, 0, 30.0], [0, 1.0, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])  # LAS, anisotropic


def write_subject(folder: Path) -> tuple[Subject, np.ndarray]:
    """Two modalities non-zero in [3:15, 5:20, 2:11], the T2 also at one voxel the T1 is 0 (the box
    is over every channel), and a label voxel beyond both images (the box holds labels too)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[4:14, 6:19, 3:10] = rng.choice([10, 150, 250], size=(10, 13, 7))
    label[16, 21, 12] = 10  # labelled where every image is 0
    t1 = np.zeros(SHAPE, dtype=np.float32)
    t1[3:15, 5:20, 2:10] = rng.uniform(100, 900, size=(12, 15, 8))
    t2 = np.zeros(SHAPE, dtype=np.float32)
    t2[3:15, 5:20, 2:11] = rng.uniform(100, 900, size=(12, 15, 9))
    paths = []
    for name, array in (("T1", t1), ("T2", t2), ("label", label)):
        paths.append(folder / f"s-{name}.nii.gz")
        nib.save(nib.Nifti1Image(array, AFFINE), paths[-1])
    return Subject("s", tuple(paths[:2]), paths[2]), label


def test_the_box_holds_every_non_zero_channel_and_every_label_and_nothing_else() -> None:
    image = np.zeros((2, 6, 7, 8))
    image[0, 1:3, 2:4, 3:5] = 1
    image[1, 2, 5, 4] = -1  # z-scored values can be negative: non-zero is what counts
    label = np.zeros((6, 7, 8), dtype=np.int16)
    label[4, 2, 6] = 2
    assert nonzero_box(image) == (slice(1, 3), slice(2, 6), slice(3, 5))
    assert nonzero_box(image, label) == (slice(1, 5), slice(2, 6), slice(3, 7))
    assert nonzero_box(np.zeros((1, 4, 4, 4))) == (slice(None),) * 3  # nothing at all: the whole grid
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    cropped, cut_label, cut_affine = crop_to_nonzero(image, label, affine)
    assert cropped.shape == (2, 4, 4, 4) and cut_label.shape == (4, 4, 4) and cut_label[3, 0, 3] == 2
    np.testing.assert_array_equal(cut_affine[:3, 3], [10 + 2 * 1, 20 + 3 * 2, 30 + 4 * 3])  # world of voxel (1, 2, 3)
    np.testing.assert_array_equal(cut_affine[:3, :3], affine[:3, :3])


def test_a_cropped_subject_is_the_uncropped_one_cut_and_goes_back_onto_the_scan_exactly(tmp_path: Path) -> None:
    subject, label = write_subject(tmp_path / "data")
    whole = load_subject(subject, LABELS, PreprocessingSettings())
    cropped = load_subject(subject, LABELS, PreprocessingSettings(crop_to_nonzero=True))
    box = nonzero_box(whole.image, whole.label)
    assert whole.image.shape == (2, *SHAPE) and cropped.image.shape == (2, 14, 17, 11)
    assert cropped.image.size / whole.image.size == pytest.approx(14 * 17 * 11 / np.prod(SHAPE))
    # Only voxels 0 in every channel and unlabelled were cut, so the z-scores are the same numbers.
    np.testing.assert_array_equal(cropped.image, whole.image[(slice(None), *box)])
    np.testing.assert_array_equal(cropped.label, whole.label[box])
    assert cropped.original_shape == whole.original_shape == SHAPE
    np.testing.assert_array_equal(cropped.original_affine, whole.original_affine)
    corner = np.array([box[0].start, box[1].start, box[2].start, 1.0])
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], whole.affine @ corner)  # the box's first voxel

    # The label as a "prediction" of the cropped grid: back on the scan's LAS grid voxel for voxel.
    back = Segmentation.from_network_grid("s", cropped.label, LABELS, cropped.affine, cropped.original_affine,
                                          cropped.original_shape)
    np.testing.assert_array_equal(LABELS.decode(back.classes), label)
    np.testing.assert_array_equal(back.affine, nib.load(subject.images[0]).affine)  # as stored (float32)
    one_hot = np.eye(4, dtype=np.float32)[cropped.label].transpose(3, 0, 1, 2)
    maps = Segmentation.from_network_grid("s", cropped.label, LABELS, cropped.affine, cropped.original_affine,
                                          cropped.original_shape, probabilities=one_hot).probabilities
    np.testing.assert_array_equal(maps.sum(axis=0), np.ones(SHAPE))  # background probability 1 outside the box
    np.testing.assert_array_equal(maps.argmax(axis=0), back.classes)
    regions = LABELS.with_regions({"all": [10, 150, 250], "inner": [150, 250], "WM": [250]})
    sigmoids = np.stack([cropped.label > 0, cropped.label >= 2, cropped.label == 3]).astype(np.float32)
    region_maps = Segmentation.from_network_grid("s", cropped.label, regions, cropped.affine, cropped.original_affine,
                                                 cropped.original_shape, probabilities=sigmoids).probabilities
    np.testing.assert_array_equal(region_maps[0], label > 0)  # a region's outside stays 0


def test_plan_py_measures_the_boxes_training_crops_to(tmp_path: Path) -> None:
    """With ``crop_to_nonzero`` the fingerprint's shapes are the boxes (nnU-Net measures after its
    crop), so that a patch is planned for what training sees; without it, the scans' grids."""
    subject, _ = write_subject(tmp_path / "data")
    cropped = fingerprint([subject], LABELS, ["T1", "T2"], crop_to_nonzero=True)
    assert cropped.shapes == [[14, 17, 11]] and cropped.cropped  # RAS order: the LAS x axis is still axis 0
    assert "(of the non-zero boxes training crops to)" in describe_fingerprint(cropped)[0]
    whole = fingerprint([subject], LABELS, ["T1", "T2"])
    assert whole.shapes == [list(SHAPE)] and not whole.cropped
    assert whole.intensities == cropped.intensities and whole.class_fractions == cropped.class_fractions


def test_training_patches_of_cropped_volumes_hang_over_the_box(tmp_path: Path) -> None:
    """A DataModule that crops lets its patches hang over the box by half a patch (nnU-Net's
    sampling of cropped cases); one that does not, keeps them inside, as before."""
    from datamodules import NiftiDataModule

    write_subject(tmp_path / "data")
    for crop, overhang in ((True, (4, 4, 4)), (False, (0, 0, 0))):
        dm = NiftiDataModule(str(tmp_path / "data"), modalities=["T1", "T2"], labels={0: "bg", 10: "CSF", 150: "GM",
                                                                                     250: "WM"},
                             image_pattern="{subject}-{modality}.nii.gz", label_pattern="{subject}-label.nii.gz",
                             patch_size=(8, 8, 8), cache_dir=None, crop_to_nonzero=crop)
        dm.setup("fit")
        assert dm.train_set.samplers[0].overhang == overhang
        assert dm.train_set.volumes[0].image.shape[1:] == ((14, 17, 11) if crop else SHAPE)


def test_the_option_keys_the_cache_and_is_read_back_from_a_checkpoint() -> None:
    """Off, settings describe themselves as before it existed (caches made then stay valid); on,
    the cache key changes, and a checkpoint's DataModule arguments carry it to prediction."""
    assert "crop_to_nonzero" not in PreprocessingSettings().describe()
    assert PreprocessingSettings(crop_to_nonzero=True).describe()["crop_to_nonzero"] is True
    subject = Subject("s", (Path(__file__),))
    assert cache_key(subject, None, PreprocessingSettings()) != cache_key(
        subject, None, PreprocessingSettings(crop_to_nonzero=True))
    assert PreprocessingSettings.from_hparams({"crop_to_nonzero": True, "patch_size": [8, 8, 8]}).crop_to_nonzero
    assert not PreprocessingSettings.from_hparams({}).crop_to_nonzero


def test_a_model_segments_a_cropped_scan_back_onto_the_whole_grid(trained_checkpoint: Path, tiny_demo_dir: Path,
                                                                   tmp_path: Path) -> None:
    """The same checkpoint with the crop on: a segmentation of the scan's shape and affine, the
    background value outside the box, and nearly the uncropped segmentation inside it (the windows
    sit elsewhere, so not voxel for voxel)."""
    from core.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint(trained_checkpoint, "cpu")
    files = [str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")]
    scan = nib.load(files[0])
    padded = tmp_path / "padded"  # the subject in a larger field of view of zeros, as BraTS scans are
    padded.mkdir()
    for path in files:
        data = np.asarray(nib.load(path).dataobj)
        nib.save(nib.Nifti1Image(np.pad(data, 6).astype(np.float32), scan.affine), padded / Path(path).name)
    inputs = [str(padded / Path(p).name) for p in files]
    uncropped = segmenter.segment(inputs)
    cropping = dataclasses.replace(segmenter, preprocessing=dataclasses.replace(segmenter.preprocessing,
                                                                                crop_to_nonzero=True))
    cropped = cropping.segment(inputs)
    written = np.asarray(cropped.dataobj)
    assert written.shape == nib.load(inputs[0]).shape[:3] and np.allclose(cropped.affine, scan.affine)
    assert not written[:6].any() and not written[-6:].any() and not written[:, :, :6].any()
    agreement = float((written == np.asarray(uncropped.dataobj)).mean())
    assert agreement > 0.95, agreement
