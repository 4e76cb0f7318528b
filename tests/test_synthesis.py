"""Training images made from label maps (SynthSeg's generator): what one generated patch is,
and a model trained so records, and is used as, a model of any single contrast."""

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.io import DataError, DataWarning
from core.modality_profiles import ANY_CONTRAST
from datamodules.augmentation import Augmentation, build_augmentation
from datamodules.synthesis import LabelsToImage

PLAIN = {"blur_sigma": [0.0, 0.0], "resolution_prob": 0.0, "bias_std": [0.0, 0.0], "noise_std": [0.0, 0.0],
         "gamma_std": 0.0}


def label_patch(shape: tuple[int, int, int] = (24, 24, 24)) -> torch.Tensor:
    """Background border, then three nested tissue blocks (classes 1, 2, 3), one ignored voxel."""
    label = torch.zeros((1, *shape), dtype=torch.int64)
    label[0, 2:-2, 2:-2, 2:-2] = 1
    label[0, 5:-5, 5:-5, 5:-5] = 2
    label[0, 9:-9, 9:-9, 9:-9] = 3
    label[0, 2, 2, 2] = -1
    return label


PATHS = ("patch", "batch")  # in the loader's workers; on the device (augment_on: device)


def generate(step: LabelsToImage, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator,
             path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One patch generated on ``path``; on ``batch`` as the middle of three copies, the label
    space's 4 classes given as the DataModule gives them."""
    if path == "patch":
        return step(image, label, rng)
    images, labels = Augmentation([step]).batch(image.expand(3, *image.shape), label.expand(3, *label.shape), rng,
                                                classes=4)
    assert images.shape[:2] == (3, 1) and torch.equal(labels, label.expand(3, *label.shape))
    return images[1], labels[1]


@pytest.mark.parametrize("path", PATHS)
def test_a_generated_patch_is_one_z_scored_channel_with_zero_background(path: str) -> None:
    label = label_patch()
    image, out = generate(LabelsToImage(), torch.zeros((2, 24, 24, 24)), label, np.random.default_rng(0), path)
    assert image.shape == (1, 24, 24, 24) and image.dtype == torch.float32
    assert torch.equal(out, label)  # the label is returned as it came
    brain = label[0] != 0
    assert torch.all(image[0][~brain] == 0)
    assert image[0][brain].mean().item() == pytest.approx(0.0, abs=1e-4)
    assert image[0][brain].std().item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_each_label_gets_its_own_gaussian_and_each_patch_another_contrast(path: str) -> None:
    label = label_patch()
    step = LabelsToImage(**PLAIN)
    orders = set()
    for seed in range(12):
        image = generate(step, torch.zeros((1, 24, 24, 24)), label, np.random.default_rng(seed), path)[0][0]
        means = [image[label[0] == c].mean().item() for c in (1, 2, 3)]
        spreads = [image[label[0] == c].std().item() for c in (1, 2, 3)]
        assert max(spreads) < 1.5  # a Gaussian per label: far tighter than the z-scored whole...
        orders.add(tuple(np.argsort(means)))  # ...whose order of tissue brightness is drawn anew
    assert len(orders) >= 4  # T1-like, T2-like and other orderings among 12 patches
    again = generate(step, torch.zeros((1, 24, 24, 24)), label, np.random.default_rng(3), path)[0]
    first = generate(step, torch.zeros((1, 24, 24, 24)), label, np.random.default_rng(3), path)[0]
    assert torch.equal(again, first)  # all randomness from the generator


@pytest.mark.parametrize("path", PATHS)
def test_thick_slices_smooth_one_axis(path: str) -> None:
    label = torch.zeros((1, 32, 32, 32), dtype=torch.int64)
    label[0, 1:-1, 1:-1, 1:-1] = 1
    step = LabelsToImage(**{**PLAIN, "resolution_prob": 1.0, "thickness": [6.0, 6.0], "stds": [20.0, 25.0]})
    image = generate(step, torch.zeros((1, 32, 32, 32)), label, np.random.default_rng(5), path)[0][0][8:-8, 8:-8, 8:-8]
    roughness = [image.diff(dim=d).abs().mean().item() for d in range(3)]
    assert min(roughness) < 0.35 * sorted(roughness)[1]  # one axis far smoother than the other two


class MidpointDraws:
    """A stand-in for the NumPy generator whose draws are fixed: each ``uniform`` gives evenly
    spaced values from low to high (the same for every patch of a batch), ``normal`` its mean."""

    def uniform(self, low: float, high: float, size: int | tuple[int, ...] = ()) -> np.ndarray:
        shape = (size,) if isinstance(size, int) else tuple(size)
        if not shape:
            return np.float64((low + high) / 2)
        return np.broadcast_to(np.linspace(low, high, shape[-1]), shape).copy()

    def normal(self, mean: float, std: float, size: int | tuple[int, ...] = ()) -> np.ndarray:
        return np.full(size, float(mean)) if size != () else np.float64(mean)

    def integers(self, high: int) -> int:
        return 7

    def random(self) -> float:
        return 0.5


def test_with_the_same_draws_the_batch_path_generates_the_patch_paths_image() -> None:
    """Draws pinned (a Gaussian of spread 0 per class, intensities spaced over ``means``, the
    ignored voxel its own): the two paths compute the same image, class lookups and the
    normalisation included."""
    label = label_patch()
    step = LabelsToImage(**{**PLAIN, "stds": [0.0, 0.0]})
    one, _ = step(torch.zeros((1, 24, 24, 24)), label, MidpointDraws())
    both, _ = Augmentation([step]).batch(torch.zeros((2, 1, 24, 24, 24)), label.expand(2, 1, 24, 24, 24),
                                         MidpointDraws(), classes=4)
    assert len(torch.unique(one)) == 5  # background and four intensities (three classes, ignored)
    torch.testing.assert_close(both[0], one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1], one, atol=1e-5, rtol=1e-5)
    without_count, _ = Augmentation([step]).batch(torch.zeros((1, 1, 24, 24, 24)), label[None], MidpointDraws())
    torch.testing.assert_close(without_count[0], one, atol=1e-5, rtol=1e-5)  # the batch's largest class read


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="background must be 'zero' or 'random'"):
        LabelsToImage(background="noise")
    with pytest.raises(ValueError, match=r"thickness must satisfy 1.0 <= low <= high"):
        LabelsToImage(thickness=[0.5, 2.0])
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'mean' for 'labels_to_image'"):
        build_augmentation([{"name": "labels_to_image", "mean": [0, 1]}])


def test_the_datamodule_takes_one_modality_and_records_any_contrast(tiny_demo_dir: Path) -> None:
    from datamodules import ISeg2017DataModule

    steps = [{"name": "labels_to_image"}]
    with pytest.raises(ValueError, match=r"labels_to_image makes one channel .* got \['T1', 'T2'\]"):
        ISeg2017DataModule(str(tiny_demo_dir), augmentation=steps, cache_dir=None)
    with pytest.raises(ValueError, match=r"labels_to_image trains a model for scans of any resolution: set "
                                         r"target_spacing"):
        ISeg2017DataModule(str(tiny_demo_dir), modalities=["T1"], augmentation=steps, cache_dir=None)
    dm = ISeg2017DataModule(str(tiny_demo_dir), modalities=["T1"], augmentation=steps, cache_dir=None,
                            patch_size=(16, 16, 16), samples_per_volume=1, val_subjects=["subject-3"],
                            target_spacing=(6.0, 6.0, 6.0))
    assert dm.modality_names == [ANY_CONTRAST] and dm.in_channels == 1
    dm.setup("fit")
    # No contrast's profile to hold scans to: only the share of the generated images' zero background (class 0)
    profiles = dm.modality_profiles
    training = [v.label for v in dm._volumes.values() if v.subject_id != "subject-3"]
    assert profiles.modalities == (ANY_CONTRAST,) and len(training) == 3
    assert profiles.zeros.tolist() == [min(float(np.mean(label == 0)) for label in training)]
    t1 = np.stack([v.image[0] for v in dm._volumes.values()])[:1]
    assert profiles.problems(t1, ["t1.hdr"]) == [] and profiles.background_problems(t1, ["t1.hdr"]) == []
    item = dm.train_set[0]  # each access draws a new patch
    image, label = item["image"], item["label"]
    assert image.shape == (1, 16, 16, 16) and torch.all(image[0][label[0] == 0] == 0)
    random = ISeg2017DataModule(str(tiny_demo_dir), modalities=["T1"], cache_dir=None, patch_size=(16, 16, 16),
                                augmentation=[{"name": "labels_to_image", "background": "random"}],
                                samples_per_volume=1, val_subjects=["subject-3"], target_spacing=(6.0, 6.0, 6.0))
    random.setup("fit")
    assert random.modality_profiles is None  # trained on random backgrounds: any background will do


def test_a_model_trained_from_label_maps_segments_one_scan_of_any_contrast(tiny_demo_dir: Path, tmp_path: Path,
                                                                          trained_checkpoint: Path) -> None:
    """The CPU smoke of configs/recipes/synthseg.yaml: a fit on the 6 mm demo, then predict.py on
    the T2 scan alone (a contrast it never saw), on the T1 scan, and on the T2 scan at 3 mm (a
    resolution it never saw: resampled to 6 mm and back); the header says which model it was."""
    import predict
    from core.geometry import resample_to_spacing
    from core.io import load_volume
    from train import run_cli

    from conftest import tiny_run_args, write_analyze

    run = run_cli(tiny_run_args("fit", tiny_demo_dir, tmp_path, "--config", "configs/recipes/synthseg.yaml",
                                "--data.init_args.target_spacing", "[6.0, 6.0, 6.0]", "--trainer.max_epochs", "1"),
                  save_config=False)
    assert run.model.hparams.modalities == [ANY_CONTRAST] and run.model.hparams.in_channels == 1
    t2, affine = load_volume(tiny_demo_dir / "subject-4-T2.hdr")
    fine, _ = resample_to_spacing(t2, affine, (3.0, 3.0, 3.0), order=1)
    write_analyze(fine.astype(np.int16), tmp_path / "subject-4-T2-3mm.hdr", zooms=(3.0, 3.0, 3.0))
    for scan in ("subject-4-T2.hdr", "subject-4-T1.hdr", tmp_path / "subject-4-T2-3mm.hdr"):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            (written,) = predict.predict(tmp_path / "checkpoints" / "last.ckpt", [tiny_demo_dir / scan],
                                         tmp_path / Path(scan).stem)
        assert [str(w.message) for w in said if issubclass(w.category, DataWarning)] == []
        image = nib.load(written)
        assert image.shape == nib.load(tiny_demo_dir / scan).shape[:3]  # in the scan's own grid
        assert bytes(image.header["descrip"]).rstrip(b"\0").endswith(b"; any-contrast model")
        assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= {0, 10, 150, 250}
    # a folder in its training layout: the modality it was validated on, or another by --contrast
    written = predict.predict(tmp_path / "checkpoints" / "last.ckpt", [tiny_demo_dir], tmp_path / "folder",
                              contrast="T2")
    assert [p.name for p in written] == [f"subject-{n}_seg.nii.gz" for n in range(1, 5)]
    with pytest.raises(DataError, match=r"was trained on \['T1', 'T2'\], not on any contrast; --contrast"):
        predict.predict(trained_checkpoint, [tiny_demo_dir], tmp_path / "refused", contrast="T2")
    # a BIDS dataset, though it was trained on iSeg's layout: the suffix to segment, as a derivative
    bids = tmp_path / "bids"
    (bids / "sub-04" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "t2", "BIDSVersion": "1.9.0"}')
    scan = nib.load(tiny_demo_dir / "subject-4-T2.hdr")
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj).reshape(scan.shape[:3]), scan.affine),
             bids / "sub-04" / "anat" / "sub-04_T2w.nii.gz")
    (derivative,) = predict.predict(tmp_path / "checkpoints" / "last.ckpt", [bids], tmp_path / "bids_out",
                                    bids_modalities=["T2w"])
    assert derivative.relative_to(tmp_path / "bids_out").as_posix() == (
        "sub-04/anat/sub-04_space-orig_desc-T2w_dseg.nii.gz")  # named by the contrast read
    np.testing.assert_array_equal(np.asarray(nib.load(derivative).dataobj),
                                  np.asarray(nib.load(tmp_path / "subject-4-T2" / "subject-4-T2_seg.nii.gz").dataobj))
    with pytest.raises(DataError, match=r"--contrast and --bids-modalities both say what to read; give one"):
        predict.predict(tmp_path / "checkpoints" / "last.ckpt", [bids], tmp_path / "both", contrast="T2",
                        bids_modalities=["T2w"])
    # Its images were made with the background at 0: a scan whose background is not (here an offset) is said.
    profiles = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)["modality_profiles"]
    labels = [load_volume(tiny_demo_dir / f"subject-{n}-label.hdr")[0] for n in (1, 2)]  # the training subjects
    assert profiles["modalities"] == [ANY_CONTRAST]
    assert profiles["zeros"] == [pytest.approx(min(float(np.mean(label == 0)) for label in labels), abs=0.02)]
    write_analyze((t2 + 20).astype(np.int16), tmp_path / "subject-4-T2-offset.hdr", zooms=(6.0, 6.0, 6.0))
    with pytest.warns(DataWarning, match=r"subject-4-T2-offset\.hdr \(given as any-contrast\) has 0\.0% of its "
                                         r"voxels at 0, the training scans at least \d+%"):
        predict.predict(tmp_path / "checkpoints" / "last.ckpt", [tmp_path / "subject-4-T2-offset.hdr"],
                        tmp_path / "offset")
