"""Percentile clipping and N4 bias-field correction (core.intensity)."""

from __future__ import annotations

import numpy as np
import pytest

from core.intensity import _to_sitk, clip_percentiles, n4_bias_correction, zscore_nonzero
from core.io import DataError

TISSUE_INTENSITIES = np.array([0.0, 100.0, 200.0, 150.0])


def phantom(shape: tuple[int, int, int], bias_axis: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tissue map, biased image, bias field): three constant tissues in 6-voxel blocks inside a
    sphere, 2% noise, times a linear multiplicative ramp 0.7..1.3 along ``bias_axis``."""
    index = np.indices(shape)
    centre = (np.array(shape)[:, None, None, None] - 1) / 2
    radius = np.sqrt(((index - centre) ** 2).sum(axis=0))
    tissue = (1 + (index // 6).sum(axis=0) % 3).astype(np.uint8)
    tissue[radius > min(shape) / 2 - 2] = 0
    rng = np.random.default_rng(seed)
    clean = TISSUE_INTENSITIES[tissue] * (1 + 0.02 * rng.standard_normal(shape))
    ramp_shape = [1, 1, 1]
    ramp_shape[bias_axis] = -1
    bias = np.broadcast_to(np.linspace(0.7, 1.3, shape[bias_axis]).reshape(ramp_shape), shape)
    return tissue, (clean * bias).astype(np.float32), bias


def coefficient_of_variation(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    return np.array([image[tissue == k].std() / image[tissue == k].mean() for k in (1, 2, 3)])


@pytest.mark.parametrize("bias_axis", [0, 2])
def test_n4_removes_linear_bias_and_keeps_background_zero(bias_axis):
    tissue, image, _ = phantom((36, 40, 44), bias_axis)
    corrected = n4_bias_correction(image, spacing=(1.2, 1.0, 1.0), path="phantom.nii.gz")

    assert corrected.shape == image.shape and corrected.dtype == np.float32
    np.testing.assert_array_equal(corrected[tissue == 0], 0)
    assert (corrected[tissue > 0] > 0).all()
    before, after = coefficient_of_variation(image, tissue), coefficient_of_variation(corrected, tissue)
    assert (before > 0.09).all(), before  # the ramp dominates the 2% noise
    assert (after <= before / 2).all(), (before, after)
    # contrast between tissues survives: means keep the 100 : 200 : 150 ratios
    means = np.array([corrected[tissue == k].mean() for k in (1, 2, 3)])
    np.testing.assert_allclose(means / means[0], [1.0, 2.0, 1.5], rtol=0.05)


def test_sitk_conversion_reverses_axes_and_spacing():
    array = np.zeros((3, 4, 5), dtype=np.float32)
    array[2, 1, 4] = 1.0
    image = _to_sitk(array, (3.0, 2.0, 0.5))  # numpy (D, H, W) spacing
    assert image.GetSize() == (5, 4, 3)
    assert image.GetSpacing() == (0.5, 2.0, 3.0)
    assert image.GetPixel(4, 1, 2) == 1.0
    assert image.TransformIndexToPhysicalPoint((4, 1, 2)) == (2.0, 2.0, 6.0)


def test_n4_rejects_negative_and_empty_images():
    image = np.ones((8, 8, 8), dtype=np.float32)
    image[0, 0, 0] = -1.0
    with pytest.raises(DataError, match=r"^sub-07/t1\.nii: has negative intensities"):
        n4_bias_correction(image, (1, 1, 1), path="sub-07/t1.nii")
    with pytest.raises(DataError, match=r"^sub-07/t1\.nii: image is all zero"):
        n4_bias_correction(np.zeros((8, 8, 8)), (1, 1, 1), path="sub-07/t1.nii")
    with pytest.raises(DataError, match=r"^sub-07/t1\.nii: N4 needs a 3D volume"):
        n4_bias_correction(np.ones((2, 8, 8, 8)), (1, 1, 1), path="sub-07/t1.nii")


def test_clip_percentiles_hand_computed():
    image = np.zeros((10, 10, 3), dtype=np.float32)
    image[..., 1] = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    # np.percentile of 1..100 (linear): 1st -> 1 + 0.99 * 1 = 1.99, 99th -> 99 + 0.01 * 1 = 99.01
    clipped = clip_percentiles(image, 1, 99)
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped[..., 0], 0)
    np.testing.assert_array_equal(clipped[..., 2], 0)
    expected = np.clip(np.arange(1, 101, dtype=np.float32), np.float32(1.99), np.float32(99.01)).reshape(10, 10)
    np.testing.assert_allclose(clipped[..., 1], expected, rtol=1e-6)
    assert clipped[0, 0, 1] == pytest.approx(1.99) and clipped[9, 9, 1] == pytest.approx(99.01)
    np.testing.assert_array_equal(clipped[..., 1].ravel()[1:99], np.arange(2, 100))
    # the input is untouched; the full range is the identity
    assert image[9, 9, 1] == 100
    np.testing.assert_array_equal(clip_percentiles(image, 0, 100), image)


def test_clip_percentiles_integer_input_and_bad_arguments():
    image = np.array([[[0, 5, 10, 0, 20]]], dtype=np.int16)
    np.testing.assert_allclose(clip_percentiles(image, 25, 75), [[[0, 7.5, 10, 0, 15]]])
    for low, high in [(50, 50), (60, 40), (-1, 99), (1, 101)]:
        with pytest.raises(ValueError, match="percentiles"):
            clip_percentiles(image, low, high)
    with pytest.raises(DataError, match=r"^flair\.nii\.gz: image is all zero"):
        clip_percentiles(np.zeros((4, 4, 4)), 1, 99, path="flair.nii.gz")


def test_zscore_uses_non_zero_voxels_only_and_keeps_background_zero() -> None:
    image = np.array([0.0, 0.0, 2.0, 4.0, 6.0], dtype=np.float32)
    out = zscore_nonzero(image)
    # mean 4, population std sqrt(8/3)
    std = np.sqrt(8.0 / 3.0)
    np.testing.assert_allclose(out, [0.0, 0.0, -2.0 / std, 0.0, 2.0 / std], rtol=1e-6)


def test_zscore_rejects_all_zero_and_constant_images() -> None:
    with pytest.raises(DataError, match="t1.hdr: every voxel is zero"):
        zscore_nonzero(np.zeros((3, 3, 3), np.float32), "t1.hdr")
    with pytest.raises(DataError, match="same value"):
        zscore_nonzero(np.full((3, 3, 3), 5.0, np.float32), "t1.hdr")


def skewed_subject(seed: int, order: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Two z-scored channels: 0 with a long dark tail (like T1's CSF), 1 with a long bright one (T2)."""
    from core.intensity import zscore_nonzero

    rng = np.random.default_rng(seed)
    dark = 10.0 - rng.exponential(1.0, size=(16, 16, 16))
    bright = 1.0 + rng.exponential(1.0, size=(16, 16, 16))
    channels = [zscore_nonzero(dark), zscore_nonzero(bright)]
    return np.stack([channels[i] for i in order])


def test_modality_profiles_flag_swapped_and_repeated_channels_only() -> None:
    from core.modality_profiles import QUANTILES, ModalityProfiles, intensity_profile

    # The profile is the quantiles of the brain (non-zero) voxels, every 4th plane.
    channel = np.zeros((8, 4, 4))
    channel[::4] = np.arange(1, 33).reshape(2, 4, 4)
    np.testing.assert_allclose(intensity_profile(channel), np.quantile(np.arange(1, 33), QUANTILES))
    profiles = ModalityProfiles.from_images([skewed_subject(s) for s in range(3)], ["T1", "T2"])
    right, swapped = skewed_subject(7), skewed_subject(7, (1, 0))
    distances = profiles.distances(right)
    assert distances[0, 0] < 1.5 and distances[1, 1] < 1.5 and distances[0, 1] > 5 and distances[1, 0] > 5
    assert profiles.problems(right, ["a.nii", "b.nii"]) == []
    problems = profiles.problems(swapped, ["a.nii", "b.nii"])
    assert [p.split(" (profile")[0] for p in problems] == ["a.nii (given as T1) has the intensities of T2",
                                                         "b.nii (given as T2) has the intensities of T1"]
    repeated = np.stack([right[0], right[0]])
    assert profiles.problems(repeated, ["a.nii", "a.nii"])[0] == ("a.nii (given as T1) and a.nii (given as T2) "
                                                                  "hold the same image")
    restored = ModalityProfiles.from_dict(profiles.to_dict())
    np.testing.assert_array_equal(restored.distances(swapped), profiles.distances(swapped))
    assert ModalityProfiles.from_dict(None) is None
    assert ModalityProfiles.from_dict({**profiles.to_dict(), "quantiles": [0.5]}) is None


def test_a_channel_unlike_every_training_scan_of_its_modality_is_flagged() -> None:
    """Three times farther from its own profile than any training scan (and at least 4 spreads),
    like no other modality: flagged as unlike, in a model of one modality too; a new scan of the
    training scans' distribution is not."""
    from core.modality_profiles import ModalityProfiles

    profiles = ModalityProfiles.from_images([skewed_subject(s) for s in range(5)], ["T1", "T2"])
    labels = skewed_subject(7)
    labels[1] = np.digitize(labels[1], [-1, 0, 1]).astype(np.float32) * 100 + 10  # a label map given as T2
    (problem,) = profiles.problems(labels, ["a.nii", "seg.nii"])
    own = profiles.distances(labels)[1, 1]
    assert own >= max(4.0, 3 * profiles.tolerance[1]) and profiles.distances(labels)[1, 0] * 1.5 > own
    assert problem == (f"seg.nii (given as T2) has intensities unlike every training scan's T2 (profile distance "
                       f"{own:.1f}; training scans: at most {profiles.tolerance[1]:.1f}): another contrast, a label "
                       "map, or a scan preprocessed otherwise is segmented worse")
    t1_only = ModalityProfiles.from_images([skewed_subject(s)[:1] for s in range(5)], ["T1"])
    assert t1_only.subjects == 5 and t1_only.problems(skewed_subject(7)[:1], ["t1.nii"]) == []
    (problem,) = t1_only.problems(skewed_subject(7, (1,)), ["t2.nii"])  # a T2 given to a model of T1 alone
    assert problem.startswith("t2.nii (given as T1) has intensities unlike every training scan's T1 (profile distance")
    assert ModalityProfiles.from_dict(t1_only.to_dict()).problems(skewed_subject(7, (1,)), ["t2.nii"]) == [problem]
    # Four training subjects measure no spread to call a scan unlike by, nor does a checkpoint from before
    few = ModalityProfiles.from_images([skewed_subject(s)[:1] for s in range(4)], ["T1"])
    assert few.subjects == 4 and few.problems(skewed_subject(7, (1,)), ["t2.nii"]) == []
    older = {k: v for k, v in t1_only.to_dict().items() if k not in ("zeros", "subjects")}
    assert ModalityProfiles.from_dict(older).problems(skewed_subject(7, (1,)), ["t2.nii"]) == []


def test_a_channel_without_the_training_scans_zero_background_is_flagged() -> None:
    """The profile keeps, per modality, the smallest fraction of zero voxels of a training scan;
    a channel with less than a quarter of it is flagged, and only where the training scans had a
    zero background (at least 5 % of their voxels)."""
    from core.modality_profiles import ModalityProfiles, has_background_frame, zero_fraction

    def scan(zeros: int, seed: int = 0) -> np.ndarray:  # 2 channels of 1000 voxels, the first `zeros` at 0
        image = 1 + np.random.default_rng(seed).random((2, 10, 10, 10))
        image.reshape(2, -1)[:, :zeros] = 0
        return image

    assert zero_fraction(scan(400)[0]) == 0.4 and zero_fraction(np.zeros((0, 3))) == 0.0
    profiles = ModalityProfiles.from_images([scan(600, 1), scan(400, 2), scan(500, 3)], ["T1", "T2"])
    np.testing.assert_array_equal(profiles.zeros, [0.4, 0.4])
    assert profiles.background_problems(scan(100), ["a.nii", "b.nii"]) == []  # a quarter of 0.4 is 0.1
    ringing = scan(99)
    shell = np.ones((10, 10, 10), dtype=bool)
    shell[2:-2, 2:-2, 2:-2] = False  # the field of view's frame around the "brain"
    ringing[0][shell] = 1e-3 * (0.5 + np.random.default_rng(4).random(shell.sum()))  # interpolation ringing there
    ringing[0].reshape(-1)[:99] = 0  # but for 99 voxels (of the frame's first face): 9.9 % at 0
    ringing[1].reshape(-1)[:400] = 0  # the second channel keeps its background
    assert not has_background_frame(scan(99)[0]) and has_background_frame(ringing[0])  # noise to the edge: no frame
    (problem,) = profiles.background_problems(ringing, ["a.nii", "b.nii"])
    assert problem.startswith("a.nii (given as T1) has 9.9% of its voxels at 0, the training scans at least 40% "
                              "(a skull-stripped scan's background): a background that is not 0 (a scan not "
                              "skull-stripped, interpolation ringing, an offset) is z-scored and segmented as if it "
                              "were brain")
    assert profiles.problems(ringing, ["a.nii", "b.nii"]) == []  # said as a background, not as another contrast
    restored = ModalityProfiles.from_dict(profiles.to_dict())
    np.testing.assert_array_equal(restored.zeros, profiles.zeros)
    assert restored.background_problems(ringing, ["a.nii", "b.nii"]) == [problem]
    older = {k: v for k, v in profiles.to_dict().items() if k != "zeros"}  # a checkpoint from before
    assert ModalityProfiles.from_dict(older).zeros is None
    assert ModalityProfiles.from_dict(older).background_problems(ringing, ["a.nii", "b.nii"]) == []
    whole_head = ModalityProfiles.from_images([scan(40, 1), scan(45, 2)], ["T1", "T2"])  # 4 %: not skull-stripped
    assert whole_head.background_problems(scan(0), ["a.nii", "b.nii"]) == []


def test_the_package_trains_without_simpleitk_and_n4_says_it_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SimpleITK is optional: no module of ours imports it at import time (so the DataModules and
    train.py load without it), and asking for N4 where it is missing is one line naming the
    package, at the DataModule's construction."""
    import ast
    import sys
    from pathlib import Path

    from core.io import DataError
    from datamodules import ISeg2017DataModule

    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("*.py"), *[p for d in ("core", "networks", "datamodules", "lightning_modules")
                                       for p in (root / d).rglob("*.py")]]:
        top_level = [node for node in ast.parse(path.read_text()).body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {alias.name for node in top_level for alias in node.names} | {
            node.module for node in top_level if isinstance(node, ast.ImportFrom)}
        assert "SimpleITK" not in names, f"{path} imports SimpleITK at import time"
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # as if not installed
    with pytest.raises(DataError) as error:
        ISeg2017DataModule("x", n4_bias_correction=True)
    assert str(error.value) == ("N4 bias-field correction (data.init_args.n4_bias_correction: true) needs SimpleITK, "
                                "which is not installed here: pip install SimpleITK==2.5.7")
