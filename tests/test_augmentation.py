"""Training augmentation: configuration errors, reproducibility, image/label alignment, and that
each transform really does what its options say (on small synthetic patches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datamodules.augmentation import AUGMENTATIONS, Augmentation, build_augmentation, elastic_field

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (32, 32, 32)
ALL_ON = [{"name": name, "prob": 1.0} for name in AUGMENTATIONS]


def phantom(shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    """A (1, D, H, W) int64 label: an off-centre ball (1) holding a smaller ball (4) and a box (9),
    with an ignored (-1) slab cutting through; background 0. The gaps between class values make
    any blending (linear instead of nearest interpolation) produce values that are not in it."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = np.array(shape) * np.array([0.5, 0.45, 0.55])
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    label = np.zeros(shape, dtype=np.int64)
    label[r < 0.38 * shape[0]] = 1
    label[r < 0.18 * shape[0]] = 4
    label[10:14, 6:12, 14:24] = 9
    label[:, :, 5:8][label[:, :, 5:8] == 1] = -1
    return torch.from_numpy(label)[None]


def image_for(label: torch.Tensor) -> torch.Tensor:
    """A 2-channel z-score-like image: channel 0 encodes the label (k -> 100 k), channel 1 is noise
    inside the object; the background is exactly 0 in both."""
    rng = np.random.default_rng(123)
    inside = (label[0] != 0).numpy()
    second = np.where(inside, rng.normal(0.0, 1.0, label.shape[1:]), 0.0)
    return torch.stack([label[0].float() * 100.0, torch.from_numpy(second).float()])


def run(specs: list[dict], seed: int, label: torch.Tensor | None = None,
        image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    label = phantom() if label is None else label
    image = image_for(label) if image is None else image
    augment = build_augmentation(specs)
    assert isinstance(augment, Augmentation)
    return augment(image, label, np.random.default_rng(seed))


# --- configuration ---------------------------------------------------------------------------

def test_empty_list_means_no_augmentation() -> None:
    assert build_augmentation([]) is None


def test_unknown_name_is_rejected_with_the_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"spec #1 .*'rotate'.*allowed: flip, affine, elastic, gamma"):
        build_augmentation([{"name": "flip"}, {"name": "rotate", "prob": 0.2}])
    with pytest.raises(ValueError, match="'name'"):
        build_augmentation([{"prob": 0.2}])


def test_unknown_option_is_rejected_with_the_allowed_options() -> None:
    with pytest.raises(ValueError, match=r"spec #0 .*'probability'.*'flip'; allowed: prob, axes"):
        build_augmentation([{"name": "flip", "probability": 0.5}])
    with pytest.raises(ValueError, match="allowed: prob, rotate_degrees, scale, translate"):
        build_augmentation([{"name": "affine", "rotation": 10}])


@pytest.mark.parametrize("spec", [
    {"name": "affine", "scale": [0.2, -0.2]},
    {"name": "flip", "prob": 1.5},
    {"name": "flip", "axes": [3]},
    {"name": "elastic", "sigma": [0, 4]},
    {"name": "noise", "std": -1},
])
def test_bad_values_are_rejected_naming_the_spec(spec: dict) -> None:
    with pytest.raises(ValueError, match=f"spec #0 .*{spec['name']}"):
        build_augmentation([spec])


def test_standard_preset_builds() -> None:
    config = yaml.safe_load((ROOT / "configs/augmentation/standard.yaml").read_text())
    specs = config["data"]["init_args"]["augmentation"]
    assert [s["name"] for s in specs] == ["flip", "affine", "elastic", "bias_field", "gamma", "noise"]
    augment = build_augmentation(specs)
    assert augment is not None and len(augment.steps) == len(specs)


def test_nnunet_preset_builds_with_nnunets_steps() -> None:
    config = yaml.safe_load((ROOT / "configs/augmentation/nnunet.yaml").read_text())
    specs = config["data"]["init_args"]["augmentation"]
    assert [s["name"] for s in specs] == ["affine", "noise", "blur", "brightness", "contrast", "low_resolution",
                                          "gamma", "flip"]
    augment = build_augmentation(specs)
    image, label = augment(image_for(phantom()), phantom(), np.random.default_rng(0))
    assert image.shape == (2, *SHAPE) and set(label.unique().tolist()) <= {-1, 0, 1, 4, 9}


# --- contract: shapes, dtypes, label values, reproducibility ---------------------------------

@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_step_keeps_shapes_dtypes_and_label_values(name: str) -> None:
    label = phantom()
    image, out_label = run([{"name": name, "prob": 1.0}], seed=1, label=label)
    assert type(image) is torch.Tensor and type(out_label) is torch.Tensor  # not MONAI MetaTensors
    assert image.shape == (2, *SHAPE) and image.dtype == torch.float32
    assert out_label.shape == (1, *SHAPE) and out_label.dtype == torch.int64
    # nearest neighbour: no new label values (0 can come from outside the patch), -1 survives
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist()) | {0}
    assert (out_label == -1).sum() > 0.5 * (label == -1).sum()


def test_same_rng_state_reproduces_and_different_rngs_differ() -> None:
    np.random.seed(0)  # global generators must play no part
    torch.manual_seed(0)
    a_image, a_label = run(ALL_ON, seed=7)
    np.random.seed(99)
    torch.manual_seed(99)
    b_image, b_label = run(ALL_ON, seed=7)
    c_image, c_label = run(ALL_ON, seed=8)
    assert torch.equal(a_image, b_image) and torch.equal(a_label, b_label)
    assert not torch.equal(a_image, c_image) and not torch.equal(a_label, c_label)


def test_probability_zero_changes_nothing() -> None:
    label = phantom()
    image = image_for(label)
    out_image, out_label = run([{**s, "prob": 0.0} for s in ALL_ON], seed=3, label=label, image=image)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_probability_is_respected() -> None:
    augment = build_augmentation([{"name": "noise", "prob": 0.3}])
    label = torch.ones((1, 4, 4, 4), dtype=torch.int64)
    image = torch.ones((1, 4, 4, 4))
    rng = np.random.default_rng(0)
    changed = [not torch.equal(augment(image, label, rng)[0], image) for _ in range(400)]
    assert 0.22 < np.mean(changed) < 0.38


# --- spatial transforms ----------------------------------------------------------------------

def test_flip_with_probability_one_equals_numpy_flip_on_image_and_label() -> None:
    label = phantom()
    image = image_for(label)
    for axes in ([0, 1, 2], [1]):
        out_image, out_label = run([{"name": "flip", "prob": 1.0, "axes": axes}], 0, label, image)
        np.testing.assert_array_equal(out_image.numpy(), np.flip(image.numpy(), [a + 1 for a in axes]))
        np.testing.assert_array_equal(out_label.numpy(), np.flip(label.numpy(), [a + 1 for a in axes]))
        assert not torch.equal(out_label, label)  # the phantom is asymmetric along every axis


def agreement(image: torch.Tensor, label: torch.Tensor) -> float:
    """Fraction of labelled interior voxels (all 6 neighbours share the class, so interpolation
    cannot blend classes there) whose image channel 0 says the same class (k -> 100 k)."""
    known = label[0] != 0
    for axis in range(3):
        for shift in (-1, 1):
            known &= torch.roll(label[0], shift, axis) == label[0]
    return float(((image[0] - 100.0 * label[0]).abs() < 50.0)[known].float().mean())


@pytest.mark.parametrize("spec", [
    {"name": "affine", "prob": 1.0, "rotate_degrees": 25, "scale": [-0.2, 0.2], "translate": 3},
    {"name": "elastic", "prob": 1.0},
])
def test_spatial_transforms_keep_image_and_label_aligned(spec: dict) -> None:
    for seed in range(2):
        image, label = run([spec], seed=seed)
        assert not torch.equal(label, phantom())
        assert agreement(image, label) > 0.99
        # the check can fail: two voxels of misregistration already break it
        assert agreement(image, torch.roll(label, 2, dims=2)) < 0.95


def test_affine_scale_is_the_change_in_anatomy_size() -> None:
    label = torch.zeros((1, *SHAPE), dtype=torch.int64)
    label[0, 6:26, 6:26, 6:26] = 1
    for scale, factor in ((0.2, 1.2), (-0.2, 0.8)):
        _, out = run([{"name": "affine", "prob": 1.0, "rotate_degrees": 0, "scale": [scale, scale]}], 0,
                     label, label.float())
        assert int(out.sum()) == pytest.approx(20**3 * factor**3, rel=0.03)


def test_elastic_defaults_visibly_move_anatomy() -> None:
    """Default elastic on a 32^3 patch: label boundaries move by voxels, not fractions of one."""
    label = phantom()
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"))
    image = torch.from_numpy(np.concatenate([coords + 1.0, np.ones((1, *SHAPE), np.float32)]))
    for seed in range(3):
        out_image, out_label = run([{"name": "elastic", "prob": 1.0}], seed, label, image)
        changed = float((out_label != label)[label != 0].float().mean())
        assert changed > 0.05
        inside = out_image[3] > 0.9999  # voxels sampled from within the patch
        displacement = (out_image[:3] - image[:3])[:, inside].norm(dim=0)
        assert float(displacement.mean()) > 1.0
        assert float(displacement.max()) > 3.0


@pytest.mark.parametrize(("magnitude", "expected"), [(1.0, 1.0), (2.0, 2.0), ([1.0, 2.0], 1.5)])
def test_elastic_magnitude_is_the_rms_displacement_in_voxels(magnitude: float | list, expected: float) -> None:
    """Measured on the warped patch: an image of voxel coordinates, sampled linearly (exact for a
    linear ramp), shows each voxel's displacement along each axis wherever it came from inside."""
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"))
    image = torch.from_numpy(np.concatenate([coords + 1.0, np.ones((1, *SHAPE), np.float32)]))
    label = torch.zeros((1, *SHAPE), dtype=torch.int64)
    rms = []
    for seed in range(12):  # default sigma range (6, 9)
        out, _ = run([{"name": "elastic", "prob": 1.0, "magnitude": magnitude}], seed, label, image)
        inside = out[3] > 0.9999
        displacement = (out[:3] - image[:3])[:, inside]
        rms.append(displacement.pow(2).mean(dim=1).sqrt().numpy())  # per axis
    rms = np.array(rms)
    assert rms.mean() == pytest.approx(expected, rel=0.15)
    np.testing.assert_allclose(rms.mean(axis=0), expected, rtol=0.15)  # each axis moves as much


def test_elastic_field_has_the_requested_rms_and_is_smooth() -> None:
    field = elastic_field((32, 40, 24), sigma=6.0, rms=1.5, rng=np.random.default_rng(0))
    assert field.shape == (3, 32, 40, 24) and field.dtype == np.float32
    np.testing.assert_allclose(np.sqrt((field.astype(np.float64) ** 2).mean(axis=(1, 2, 3))), 1.5, rtol=1e-5)
    # Smooth: neighbouring displacements nearly equal (white noise would correlate ~0).
    neighbours = np.corrcoef(field[0, :-1].ravel(), field[0, 1:].ravel())[0, 1]
    assert neighbours > 0.95
    assert not np.allclose(field[0], field[1])  # independent per axis


# --- intensity transforms --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gamma", "bias_field", "noise", "blur", "brightness", "contrast", "low_resolution"])
def test_intensity_steps_change_brain_only_and_never_the_label(name: str) -> None:
    label = phantom()
    image = image_for(label)
    spec = {"name": name, "prob": 1.0, **({"per_channel_prob": 1.0} if name in ("blur", "low_resolution") else {})}
    out_image, out_label = run([spec], seed=5, label=label, image=image)
    assert torch.equal(out_label, label)
    background = (image == 0).all(0)
    assert bool((out_image[:, background] == 0).all())  # z-scored background stays exactly 0
    assert float((out_image - image)[:, ~background].abs().mean()) > 1e-3


def test_noise_std_is_in_z_score_units() -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.ones((1, *SHAPE))
    out, _ = run([{"name": "noise", "prob": 1.0, "std": 0.2, "sample_std": False}], 0, label, image)
    noise = out - image
    assert float(noise.std()) == pytest.approx(0.2, rel=0.03)
    assert abs(float(noise.mean())) < 0.01
    stds = [float((run([{"name": "noise", "prob": 1.0, "std": 0.2}], s, label, image)[0] - image).std())
            for s in range(6)]
    assert max(stds) <= 0.21 and np.ptp(stds) > 0.02  # sample_std: drawn from [0, std]


def test_gamma_keeps_brain_mean_and_std_but_changes_contrast() -> None:
    label = phantom()
    image = image_for(label)
    out, _ = run([{"name": "gamma", "prob": 1.0, "gamma": [2.0, 2.0]}], 0, label, image)
    brain = (image != 0).any(0)
    for c in range(2):
        before, after = image[c][brain], out[c][brain]
        assert float(after.mean()) == pytest.approx(float(before.mean()), abs=1e-3 * float(before.std()))
        assert float(after.std()) == pytest.approx(float(before.std()), rel=1e-3)
        order = torch.argsort(before)  # monotone, but not linear
        assert bool((torch.diff(after[order]) >= -1e-4).all())
        assert abs(float(torch.corrcoef(torch.stack([before, after]))[0, 1])) < 0.999


def test_bias_field_is_smooth_and_multiplicative_above_the_brain_minimum() -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.from_numpy(np.random.default_rng(0).normal(0.0, 1.0, (1, *SHAPE))).float()
    out, _ = run([{"name": "bias_field", "prob": 1.0, "coeff_range": [-0.1, 0.1]}], 2, label, image)
    floor = image.min()
    keep = (image - floor) > 0.5
    field = ((out - floor) / (image - floor))[keep]
    assert 0.3 < float(field.min()) < 1.0 < float(field.max()) < 3.0
    # neighbouring voxels see nearly the same factor: smooth, unlike the image itself
    ratio = (out - floor) / (image - floor)
    both = keep[0, :, :, 1:] & keep[0, :, :, :-1]
    assert float((ratio[0, :, :, 1:] - ratio[0, :, :, :-1])[both].abs().max()) < 0.1


def test_brightness_multiplies_each_channel_by_one_factor_in_range() -> None:
    label = phantom()
    image = image_for(label)
    out, _ = run([{"name": "brightness", "prob": 1.0, "factor": [0.75, 1.25]}], 3, label, image)
    brain = (image != 0).any(0)
    for c in range(2):
        ratios = out[c][brain & (image[c] != 0)] / image[c][brain & (image[c] != 0)]
        assert float(ratios.max() - ratios.min()) < 1e-5 and 0.75 <= float(ratios[0]) <= 1.25


def test_contrast_scales_around_the_brain_mean_within_the_former_range() -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.linspace(-2.0, 2.0, int(np.prod(SHAPE))).view(1, *SHAPE)
    out, _ = run([{"name": "contrast", "prob": 1.0, "factor": [0.5, 0.5]}], 0, label, image)
    # Half the contrast about the mean (0): -2 .. 2 becomes -1 .. 1, nothing clipped.
    torch.testing.assert_close(out, image * 0.5)
    out, _ = run([{"name": "contrast", "prob": 1.0, "factor": [2.0, 2.0]}], 0, label, image)
    assert float(out.min()) == pytest.approx(-2.0) and float(out.max()) == pytest.approx(2.0)  # range preserved
    assert float((out.abs() == 2.0).float().mean()) == pytest.approx(0.5, abs=0.01)  # the outer half clipped


def test_blur_smooths_and_low_resolution_is_nearest_down_then_linear_up() -> None:
    import torch.nn.functional as F

    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, *SHAPE))).float()
    blurred, _ = run([{"name": "blur", "prob": 1.0, "sigma": [1.0, 1.0], "per_channel_prob": 1.0}], 0, label, image)
    assert float(blurred.std()) < 0.5 * float(image.std())  # white noise blurred with sigma 1 voxel
    low, _ = run([{"name": "low_resolution", "prob": 1.0, "zoom": [0.5, 0.5], "per_channel_prob": 1.0}], 0, label,
                 image)
    small = [round(s * 0.5) for s in SHAPE]
    expected = F.interpolate(F.interpolate(image[None], size=small, mode="nearest"), size=SHAPE, mode="trilinear",
                             align_corners=False)[0]
    torch.testing.assert_close(low, expected)
    with pytest.raises(ValueError, match=r"zoom must lie in \(0, 1\]"):
        build_augmentation([{"name": "low_resolution", "zoom": [0.5, 2.0]}])


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3])
def test_gaussian_blur_is_scipys_with_extended_edges(sigma: float) -> None:
    """The blur runs as torch convolutions (on the GPU too) and equals SciPy's filter, edges
    extended (``mode="nearest"``), truncated at 3 sigma."""
    from scipy import ndimage

    from datamodules.augmentation import gaussian_blur

    volume = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (9, 12, 15))).float()
    expected = ndimage.gaussian_filter(volume.numpy(), sigma, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(volume, sigma).numpy(), expected, atol=1e-5)
