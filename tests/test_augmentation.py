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


PATHS = ("patch", "batch")  # augment(image, label, rng) in the loader; augment.batch(...) on the device


def run(specs: list[dict], seed: int, label: torch.Tensor | None = None,
        image: torch.Tensor | None = None, path: str = "patch") -> tuple[torch.Tensor, torch.Tensor]:
    """One patch augmented on the ``path`` given; on ``batch``, as the second of a batch of three
    copies (the first and last are other patches of the batch, drawn independently)."""
    label = phantom() if label is None else label
    image = image_for(label) if image is None else image
    augment = build_augmentation(specs)
    assert isinstance(augment, Augmentation)
    if path == "patch":
        return augment(image, label, np.random.default_rng(seed))
    images, labels = image.expand(3, *image.shape).clone(), label.expand(3, *label.shape).clone()
    out_image, out_label = augment.batch(images, labels, np.random.default_rng(seed))
    assert torch.equal(images, image.expand(3, *image.shape)), "the batch path modified its input"
    assert out_image.shape[0] == out_label.shape[0] == 3
    return out_image[1], out_label[1]


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

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_step_keeps_shapes_dtypes_and_label_values(name: str, path: str) -> None:
    label = phantom()
    image, out_label = run([{"name": name, "prob": 1.0}], seed=1, label=label, path=path)
    assert type(image) is torch.Tensor and type(out_label) is torch.Tensor  # not MONAI MetaTensors
    assert image.shape == (2, *SHAPE) and image.dtype == torch.float32
    assert out_label.shape == (1, *SHAPE) and out_label.dtype == torch.int64
    # nearest neighbour: no new label values (0 can come from outside the patch), -1 survives
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist()) | {0}
    assert (out_label == -1).sum() > 0.5 * (label == -1).sum()


@pytest.mark.parametrize("path", PATHS)
def test_same_rng_state_reproduces_and_different_rngs_differ(path: str) -> None:
    np.random.seed(0)  # global generators must play no part
    torch.manual_seed(0)
    a_image, a_label = run(ALL_ON, seed=7, path=path)
    np.random.seed(99)
    torch.manual_seed(99)
    b_image, b_label = run(ALL_ON, seed=7, path=path)
    c_image, c_label = run(ALL_ON, seed=8, path=path)
    assert torch.equal(a_image, b_image) and torch.equal(a_label, b_label)
    assert not torch.equal(a_image, c_image) and not torch.equal(a_label, c_label)


@pytest.mark.parametrize("path", PATHS)
def test_probability_zero_changes_nothing(path: str) -> None:
    label = phantom()
    image = image_for(label)
    out_image, out_label = run([{**s, "prob": 0.0} for s in ALL_ON], seed=3, label=label, image=image, path=path)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_probability_is_respected() -> None:
    augment = build_augmentation([{"name": "noise", "prob": 0.3}])
    label = torch.ones((1, 4, 4, 4), dtype=torch.int64)
    image = torch.ones((1, 4, 4, 4))
    rng = np.random.default_rng(0)
    changed = [not torch.equal(augment(image, label, rng)[0], image) for _ in range(400)]
    assert 0.22 < np.mean(changed) < 0.38


# --- spatial transforms ----------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_flip_with_probability_one_equals_numpy_flip_on_image_and_label(path: str) -> None:
    label = phantom()
    image = image_for(label)
    for axes in ([0, 1, 2], [1]):
        out_image, out_label = run([{"name": "flip", "prob": 1.0, "axes": axes}], 0, label, image, path=path)
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


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", [
    {"name": "affine", "prob": 1.0, "rotate_degrees": 25, "scale": [-0.2, 0.2], "translate": 3},
    {"name": "elastic", "prob": 1.0},
])
def test_spatial_transforms_keep_image_and_label_aligned(spec: dict, path: str) -> None:
    for seed in range(2):
        image, label = run([spec], seed=seed, path=path)
        assert not torch.equal(label, phantom())
        assert agreement(image, label) > 0.99
        # the check can fail: two voxels of misregistration already break it
        assert agreement(image, torch.roll(label, 2, dims=2)) < 0.95


@pytest.mark.parametrize("path", PATHS)
def test_affine_scale_is_the_change_in_anatomy_size(path: str) -> None:
    label = torch.zeros((1, *SHAPE), dtype=torch.int64)
    label[0, 6:26, 6:26, 6:26] = 1
    for scale, factor in ((0.2, 1.2), (-0.2, 0.8)):
        _, out = run([{"name": "affine", "prob": 1.0, "rotate_degrees": 0, "scale": [scale, scale]}], 0,
                     label, label.float(), path=path)
        assert int(out.sum()) == pytest.approx(20**3 * factor**3, rel=0.03)


@pytest.mark.parametrize("path", PATHS)
def test_elastic_defaults_visibly_move_anatomy(path: str) -> None:
    """Default elastic on a 32^3 patch: label boundaries move by voxels, not fractions of one."""
    label = phantom()
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"))
    image = torch.from_numpy(np.concatenate([coords + 1.0, np.ones((1, *SHAPE), np.float32)]))
    for seed in range(3):
        out_image, out_label = run([{"name": "elastic", "prob": 1.0}], seed, label, image, path=path)
        changed = float((out_label != label)[label != 0].float().mean())
        assert changed > 0.05
        inside = out_image[3] > 0.9999  # voxels sampled from within the patch
        displacement = (out_image[:3] - image[:3])[:, inside].norm(dim=0)
        assert float(displacement.mean()) > 1.0
        assert float(displacement.max()) > 3.0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("magnitude", "expected"), [(1.0, 1.0), (2.0, 2.0), ([1.0, 2.0], 1.5)])
def test_elastic_magnitude_is_the_rms_displacement_in_voxels(magnitude: float | list, expected: float,
                                                             path: str) -> None:
    """Measured on the warped patch: an image of voxel coordinates, sampled linearly (exact for a
    linear ramp), shows each voxel's displacement along each axis wherever it came from inside."""
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"))
    image = torch.from_numpy(np.concatenate([coords + 1.0, np.ones((1, *SHAPE), np.float32)]))
    label = torch.zeros((1, *SHAPE), dtype=torch.int64)
    rms = []
    for seed in range(12):  # default sigma range (6, 9)
        out, _ = run([{"name": "elastic", "prob": 1.0, "magnitude": magnitude}], seed, label, image, path=path)
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

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["gamma", "bias_field", "noise", "blur", "brightness", "contrast", "low_resolution"])
def test_intensity_steps_change_brain_only_and_never_the_label(name: str, path: str) -> None:
    label = phantom()
    image = image_for(label)
    spec = {"name": name, "prob": 1.0, **({"per_channel_prob": 1.0} if name in ("blur", "low_resolution") else {})}
    out_image, out_label = run([spec], seed=5, label=label, image=image, path=path)
    assert torch.equal(out_label, label)
    background = (image == 0).all(0)
    assert bool((out_image[:, background] == 0).all())  # z-scored background stays exactly 0
    assert float((out_image - image)[:, ~background].abs().mean()) > 1e-3


@pytest.mark.parametrize("path", PATHS)
def test_noise_std_is_in_z_score_units(path: str) -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.ones((1, *SHAPE))
    out, _ = run([{"name": "noise", "prob": 1.0, "std": 0.2, "sample_std": False}], 0, label, image, path=path)
    noise = out - image
    assert float(noise.std()) == pytest.approx(0.2, rel=0.03)
    assert abs(float(noise.mean())) < 0.01
    stds = [float((run([{"name": "noise", "prob": 1.0, "std": 0.2}], s, label, image, path=path)[0] - image).std())
            for s in range(6)]
    assert max(stds) <= 0.21 and np.ptp(stds) > 0.02  # sample_std: drawn from [0, std]


@pytest.mark.parametrize("path", PATHS)
def test_gamma_keeps_brain_mean_and_std_but_changes_contrast(path: str) -> None:
    label = phantom()
    image = image_for(label)
    out, _ = run([{"name": "gamma", "prob": 1.0, "gamma": [2.0, 2.0]}], 0, label, image, path=path)
    brain = (image != 0).any(0)
    for c in range(2):
        before, after = image[c][brain], out[c][brain]
        assert float(after.mean()) == pytest.approx(float(before.mean()), abs=1e-3 * float(before.std()))
        assert float(after.std()) == pytest.approx(float(before.std()), rel=1e-3)
        order = torch.argsort(before)  # monotone, but not linear
        assert bool((torch.diff(after[order]) >= -1e-4).all())
        assert abs(float(torch.corrcoef(torch.stack([before, after]))[0, 1])) < 0.999


@pytest.mark.parametrize("path", PATHS)
def test_bias_field_is_smooth_and_multiplicative_above_the_brain_minimum(path: str) -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.from_numpy(np.random.default_rng(0).normal(0.0, 1.0, (1, *SHAPE))).float()
    out, _ = run([{"name": "bias_field", "prob": 1.0, "coeff_range": [-0.1, 0.1]}], 2, label, image, path=path)
    floor = image.min()
    keep = (image - floor) > 0.5
    field = ((out - floor) / (image - floor))[keep]
    assert 0.3 < float(field.min()) < 1.0 < float(field.max()) < 3.0
    # neighbouring voxels see nearly the same factor: smooth, unlike the image itself
    ratio = (out - floor) / (image - floor)
    both = keep[0, :, :, 1:] & keep[0, :, :, :-1]
    assert float((ratio[0, :, :, 1:] - ratio[0, :, :, :-1])[both].abs().max()) < 0.1


@pytest.mark.parametrize("path", PATHS)
def test_brightness_multiplies_each_channel_by_one_factor_in_range(path: str) -> None:
    label = phantom()
    image = image_for(label)
    out, _ = run([{"name": "brightness", "prob": 1.0, "factor": [0.75, 1.25]}], 3, label, image, path=path)
    brain = (image != 0).any(0)
    for c in range(2):
        ratios = out[c][brain & (image[c] != 0)] / image[c][brain & (image[c] != 0)]
        assert float(ratios.max() - ratios.min()) < 1e-5 and 0.75 <= float(ratios[0]) <= 1.25


@pytest.mark.parametrize("path", PATHS)
def test_contrast_scales_around_the_brain_mean_within_the_former_range(path: str) -> None:
    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.linspace(-2.0, 2.0, int(np.prod(SHAPE))).view(1, *SHAPE)
    out, _ = run([{"name": "contrast", "prob": 1.0, "factor": [0.5, 0.5]}], 0, label, image, path=path)
    # Half the contrast about the mean (0): -2 .. 2 becomes -1 .. 1, nothing clipped.
    torch.testing.assert_close(out, image * 0.5)
    out, _ = run([{"name": "contrast", "prob": 1.0, "factor": [2.0, 2.0]}], 0, label, image, path=path)
    assert float(out.min()) == pytest.approx(-2.0) and float(out.max()) == pytest.approx(2.0)  # range preserved
    assert float((out.abs() == 2.0).float().mean()) == pytest.approx(0.5, abs=0.01)  # the outer half clipped


@pytest.mark.parametrize("path", PATHS)
def test_blur_smooths_and_low_resolution_is_nearest_down_then_linear_up(path: str) -> None:
    import torch.nn.functional as F

    label = torch.ones((1, *SHAPE), dtype=torch.int64)
    image = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, *SHAPE))).float()
    blurred, _ = run([{"name": "blur", "prob": 1.0, "sigma": [1.0, 1.0], "per_channel_prob": 1.0}], 0, label, image,
                     path=path)
    assert float(blurred.std()) < 0.5 * float(image.std())  # white noise blurred with sigma 1 voxel
    low, _ = run([{"name": "low_resolution", "prob": 1.0, "zoom": [0.5, 0.5], "per_channel_prob": 1.0}], 0, label,
                 image, path=path)
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


# --- the batch path (augment_on: device) against the patch path and MONAI ---------------------

@pytest.mark.parametrize("spec", [
    {"name": "flip", "prob": 1.0},
    {"name": "affine", "prob": 1.0, "rotate_degrees": 0, "scale": [0.15, 0.15]},
    {"name": "affine", "prob": 1.0, "rotate_degrees": 0, "scale": [-0.1, -0.1]},
    {"name": "gamma", "prob": 1.0, "gamma": [1.7, 1.7]},
    {"name": "gamma", "prob": 1.0, "gamma": [0.8, 0.8], "retain_stats": False, "per_channel": False},
    {"name": "bias_field", "prob": 1.0, "coeff_range": [0.04, 0.04]},
    {"name": "blur", "prob": 1.0, "sigma": [0.8, 0.8], "per_channel_prob": 1.0},
    {"name": "brightness", "prob": 1.0, "factor": [1.2, 1.2]},
    {"name": "contrast", "prob": 1.0, "factor": [0.6, 0.6]},
    {"name": "low_resolution", "prob": 1.0, "zoom": [0.6, 0.6], "per_channel_prob": 1.0},
], ids=lambda spec: "-".join(f"{v}" for v in spec.values()))
def test_with_fixed_parameters_the_batch_path_gives_the_patch_paths_patch(spec: dict) -> None:
    """Every random choice pinned (probability 1, ranges of one value): the two paths draw
    differently but must compute the same patch (MONAI's transforms on one side, the batched
    operations on the other)."""
    label = phantom()
    image = image_for(label)
    one_image, one_label = run([spec], 0, label, image, path="patch")
    batch_image, batch_label = run([spec], 0, label, image, path="batch")
    assert not torch.equal(one_image, image)
    torch.testing.assert_close(batch_image, one_image, atol=2e-4, rtol=1e-4)
    assert torch.equal(batch_label, one_label)


def test_the_batched_affine_is_monais_affine_for_any_parameters() -> None:
    """Rotations, scales and translations of their own per patch, in one call for the batch."""
    from monai.transforms import Affine as MonaiAffine

    from datamodules.augmentation import Affine

    label = phantom((24, 28, 20))
    image = image_for(label)
    images, labels = image.expand(3, *image.shape).clone(), label.expand(3, *label.shape).clone()
    draw = np.random.default_rng(4)
    rotations, scales, translations = draw.uniform(-0.5, 0.5, (2, 3)), draw.uniform(0.8, 1.25, (2, 3)), \
        draw.uniform(-3, 3, (2, 3))
    out_images, out_labels = Affine.apply_batch(images, labels, [0, 2], rotations, scales, translations)
    assert torch.equal(out_images[1], image) and torch.equal(out_labels[1], label)  # not chosen: untouched
    for row, patch in enumerate([0, 2]):
        monai = MonaiAffine(rotate_params=rotations[row].tolist(), scale_params=scales[row].tolist(),
                            translate_params=translations[row].tolist(), padding_mode="zeros", image_only=True)
        expected_image = torch.as_tensor(monai(image, mode="bilinear")).float()
        expected_label = torch.round(torch.as_tensor(monai(label.float(), mode="nearest"))).long()
        # Grid coordinates round differently in float32 (1e-6 voxel), times intensity steps of up to 900
        # per voxel: 2e-3 at most; a wrong convention (centre, axis order, direction) is tens off.
        torch.testing.assert_close(out_images[patch], expected_image, atol=5e-3, rtol=1e-5)
        assert torch.equal(out_labels[patch], expected_label)
        assert not torch.equal(out_labels[patch], label)


def test_the_batched_elastic_field_is_the_patch_paths_smoothing_of_the_same_noise() -> None:
    from scipy import ndimage

    from datamodules.augmentation import smooth_fields

    noise = torch.rand((2, 3, 20, 24, 18), generator=torch.Generator().manual_seed(0)) * 2 - 1
    sigmas, rms = [2.5, 4.0], [1.0, 2.0]
    fields = smooth_fields(noise, sigmas, rms)
    for b in range(2):
        for axis in range(3):
            expected = ndimage.gaussian_filter(noise[b, axis].double().numpy(), sigmas[b], mode="constant",
                                               truncate=3.0)
            expected *= rms[b] / np.sqrt((expected**2).mean())
            np.testing.assert_allclose(fields[b, axis].numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fields[b].pow(2).flatten(1).mean(1).sqrt().numpy(), rms[b], rtol=1e-5)


def test_the_batched_bias_fields_are_monais_legendre_fields() -> None:
    from monai.transforms import RandBiasField

    from datamodules.batch_ops import legendre_fields

    shape, degree = (9, 12, 7), 3
    coefficients = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 20))
    fields = legendre_fields(shape, coefficients, degree, torch.device("cpu"))
    generator = RandBiasField(degree=degree)
    for b in range(2):
        expected = generator._generate_random_field(shape, degree, coefficients[b].tolist())
        np.testing.assert_allclose(fields[b].numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="degree 2 has 10 terms, got 20"):
        legendre_fields(shape, coefficients, 2, torch.device("cpu"))


def test_the_batched_gamma_is_monais_adjust_contrast_per_channel() -> None:
    from monai.transforms import AdjustContrast

    from datamodules.augmentation import Gamma
    from datamodules.batch_ops import brain_masks

    label = phantom()
    images = torch.stack([image_for(label), image_for(label).flip(1) * 0.5])
    gammas = np.array([[0.7, 1.4], [1.2, 0.9]])
    mask = brain_masks(images)
    out = Gamma.gamma_batch(images, mask, gammas, retain_stats=True)
    for b in range(2):
        for c in range(2):
            inside = mask[b, 0]
            expected = AdjustContrast(gamma=gammas[b, c], retain_stats=True)(images[b, c][inside][None])[0]
            torch.testing.assert_close(out[b, c][inside], torch.as_tensor(expected).float(), atol=1e-4, rtol=1e-4)
            assert bool((out[b, c][~inside] == images[b, c][~inside]).all())


def test_the_batch_path_draws_per_patch_and_leaves_the_others_bit_for_bit() -> None:
    augment = build_augmentation([{"name": "noise", "prob": 0.3}])
    images = torch.ones((400, 1, 4, 4, 4))
    labels = torch.ones((400, 1, 4, 4, 4), dtype=torch.int64)
    out, _ = augment.batch(images, labels, np.random.default_rng(0))
    changed = ~(out == images).flatten(1).all(1)
    assert 0.22 < float(changed.float().mean()) < 0.38
    assert bool((out[~changed] == 1.0).all())
    noisy = out[changed].flatten(1)
    assert len(torch.unique(noisy[:, 0])) == len(noisy)  # every patch its own noise
    with pytest.raises(ValueError, match=r"expected images \(B, C, D, H, W\)"):
        augment.batch(images[0], labels[0], np.random.default_rng(0))


def test_labels_to_image_runs_patch_by_patch_inside_a_batch() -> None:
    augment = build_augmentation([{"name": "affine", "prob": 1.0}, {"name": "labels_to_image"}])
    label = phantom().clamp_min(0)
    images = image_for(label).expand(2, 2, *SHAPE)
    out, out_label = augment.batch(images, label.expand(2, 1, *SHAPE), np.random.default_rng(1))
    assert out.shape == (2, 1, *SHAPE) and out_label.shape == (2, 1, *SHAPE)
    assert not torch.equal(out[0], out[1])
    assert bool((out[out_label == 0] == 0).all())  # the generator's background stays 0


def test_the_batch_path_computes_in_float32_inside_a_bf16_autocast() -> None:
    """The fields and filters are float32 even where the caller runs under autocast (the
    training step's bf16-mixed): the same batch as outside it."""
    specs = [{"name": "affine", "prob": 1.0}, {"name": "blur", "prob": 1.0, "per_channel_prob": 1.0},
             {"name": "elastic", "prob": 1.0}]
    label = phantom()
    images, labels = image_for(label).expand(2, 2, *SHAPE), label.expand(2, 1, *SHAPE)
    plain = build_augmentation(specs).batch(images, labels, np.random.default_rng(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = build_augmentation(specs).batch(images, labels, np.random.default_rng(3))
    assert inside[0].dtype == torch.float32
    assert torch.equal(inside[0], plain[0]) and torch.equal(inside[1], plain[1])


def test_the_batch_path_reads_nothing_back_from_the_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU each value read back (``.item()``, ``bool()``, ``int()``, ``float()``,
    ``.tolist()``) makes the host wait for the device; the batch path of every step, the
    generator included (given the class count, as the DataModule gives it), reads none."""
    label = phantom().clamp_min(0)
    images, labels = image_for(label).expand(2, 2, *SHAPE), label.expand(2, 1, *SHAPE)
    specs = [*ALL_ON, {"name": "labels_to_image"}]
    augment = build_augmentation([{**spec, **({"per_channel_prob": 1.0} if spec["name"] in ("blur", "low_resolution")
                                              else {})} for spec in specs])

    def read_back(*args: object, **kwargs: object) -> None:
        raise AssertionError("a value was read back from a tensor")

    for method in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, method, read_back)
    out, _ = augment.batch(images, labels, np.random.default_rng(0), classes=10)
    monkeypatch.undo()
    assert out.shape == (2, 1, *SHAPE)
    with pytest.raises(AssertionError, match="read back"):  # the check can fail: without the count, one read
        for method in ("item", "__bool__", "__int__", "__float__", "tolist"):
            monkeypatch.setattr(torch.Tensor, method, read_back)
        augment.batch(images, labels, np.random.default_rng(0))
