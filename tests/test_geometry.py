"""Reorientation, resampling and the way back (core.geometry)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from core.geometry import (
    reorient_to_canonical,
    resample_onto,
    resample_to_spacing,
    same_grid,
    voxel_spacing,
)
from core.io import DataError

# LPS+ (DICOM/ITK style): voxel axes run to Left, Posterior, Superior, 0.9 x 1.1 x 2.5 mm.
LPS = np.array([[-0.9, 0, 0, 40.0], [0, -1.1, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])
# ASR: axis 0 -> Anterior, axis 1 -> Superior, axis 2 -> Right.
ASR = np.array([[0, 0, 1.2, -15.0], [0.8, 0, 0, 7.0], [0, 1.5, 0, 3.0], [0, 0, 0, 1]])


def world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    rotation = np.eye(4)
    rotation[:2, :2] = [[c, -s], [s, c]]
    return rotation


@pytest.mark.parametrize("affine", [LPS, ASR], ids=["LPS", "ASR"])
def test_reorient_keeps_world_coordinate_of_marked_voxel(affine):
    data = np.zeros((6, 7, 8), dtype=np.float32)
    data[1, 5, 2] = 1.0
    canonical, new_affine = reorient_to_canonical(data, affine)
    assert nib.aff2axcodes(new_affine) == ("R", "A", "S")
    marked = np.unravel_index(np.argmax(canonical), canonical.shape)
    np.testing.assert_allclose(world(new_affine, marked), world(affine, (1, 5, 2)), atol=1e-12)
    assert canonical.flags.c_contiguous and canonical.sum() == 1
    reference = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(canonical, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(new_affine, reference.affine)


def test_reorient_stack_moves_only_spatial_axes():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 5, 6, 7)).astype(np.float32)
    canonical, affine = reorient_to_canonical(stack, ASR)
    assert canonical.shape == (3, 7, 5, 6)  # R <- axis 2, A <- axis 0, S <- axis 1
    for c in range(3):
        single, single_affine = reorient_to_canonical(stack[c], ASR)
        np.testing.assert_array_equal(canonical[c], single)
        np.testing.assert_array_equal(affine, single_affine)


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("affine", [LPS, ASR], ids=["LPS", "ASR"])
def test_round_trip_back_to_original_grid_is_bit_exact(order, affine):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 30, (5, 6, 7)).astype(np.float32)
    stack = rng.normal(0, 1, (2, 5, 6, 7)).astype(np.float32)
    labels = rng.choice(np.array([0, 10, 150, 250], dtype=np.uint8), (5, 6, 7))
    for data in (image, stack, labels):
        canonical, canonical_affine = reorient_to_canonical(data, affine)
        back = resample_onto(canonical, canonical_affine, data.shape[-3:], affine, order)
        assert back.shape == data.shape
        if order == 0:
            assert back.dtype == data.dtype
        np.testing.assert_array_equal(back, data)  # exact: pure indexing, no interpolation


def test_resample_to_spacing_keeps_blob_centroid_and_field_of_view():
    affine = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -10.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    shape = (24, 20, 10)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    points = index @ affine[:3, :3].T + affine[:3, 3]
    centre = world(affine, (9.3, 11.6, 4.4))
    blob = (np.linalg.norm((points - centre) / [4.0, 3.0, 6.0], axis=-1) <= 1).astype(np.float32)

    resampled, new_affine = resample_to_spacing(blob, affine, (1.0, 1.0, 1.0), order=1)

    assert resampled.shape == (24, 20, 30) and resampled.dtype == np.float32
    np.testing.assert_allclose(voxel_spacing(new_affine), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.sign(np.diag(new_affine)[:3]), np.sign(np.diag(affine)[:3]))
    corner = [-0.5, -0.5, -0.5]
    np.testing.assert_allclose(world(new_affine, corner), world(affine, corner), atol=1e-12)
    far = [n - 0.5 for n in resampled.shape]
    np.testing.assert_allclose(world(new_affine, far), world(affine, [n - 0.5 for n in shape]), atol=1e-12)

    def centroid(volume, grid_affine):
        idx = np.argwhere(volume > 0.5).astype(np.float64)
        return world(grid_affine, idx.mean(axis=0))

    shift = np.abs(centroid(resampled, new_affine) - centroid(blob, affine))
    assert (shift <= 0.5).all(), shift
    # 3 mm -> 1 mm keeps the blob's extent: ~3 new voxels per old one inside it
    assert abs((resampled > 0.5).sum() / (blob > 0.5).sum() - 3.0) < 0.3


@pytest.mark.parametrize("order", [0, 1, 3])
def test_two_voxel_translation_equals_roll(order):
    rng = np.random.default_rng(2)
    data = rng.normal(size=(6, 9, 5)).astype(np.float32)
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    target = affine.copy()
    target[:3, 3] = affine[:3, :3] @ [0, 2, 0]  # target voxel (i, j, k) sits on source voxel (i, j + 2, k)
    result = resample_onto(data, affine, data.shape, target, order)
    expected = np.roll(data, -2, axis=1)
    expected[:, -2:] = 0  # beyond the source
    np.testing.assert_array_equal(result, expected)


def test_sub_voxel_shift_interpolates_linearly_and_holds_edge_value_up_to_box_border():
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) ** 2
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    target = affine.copy()
    target[2, 3] = 0.8  # 0.4 voxel along axis 2
    result = resample_onto(data, affine, data.shape, target, order=1)
    np.testing.assert_allclose(result[..., :3], 0.6 * data[..., :-1] + 0.4 * data[..., 1:], rtol=1e-6)
    # target voxel 3 sits at source index 3.4: past the last centre but inside its voxel
    np.testing.assert_array_equal(result[..., 3], data[..., 3])
    target[2, 3] = 1.0  # half a voxel: target voxel 3 sits on the box border 3.5, which is outside
    result = resample_onto(data, affine, data.shape, target, order=1)
    np.testing.assert_allclose(result[..., :3], (data[..., :-1] + data[..., 1:]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(result[..., 3], 0)


def test_labels_with_order_0_keep_only_original_values():
    rng = np.random.default_rng(3)
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:10, 2:10, 2:10] = rng.choice(np.array([10, 150, 250], dtype=np.uint8), (8, 8, 8))
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    target = rotation_z(30) @ np.diag([0.7, 0.8, 1.0, 1.0])
    target[:3, 3] = [3.0, -2.0, 1.0]
    for result in (
        resample_onto(labels, affine, (16, 15, 18), target, order=0),
        resample_to_spacing(labels, affine, (0.7, 0.7, 0.7), order=0)[0],
    ):
        assert result.dtype == np.uint8
        assert set(np.unique(result)) <= {0, 10, 150, 250}
        assert len(np.unique(result)) == 4


def test_boolean_mask_stays_boolean_with_order_0_and_becomes_a_fraction_with_order_1():
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    target = np.eye(4)
    target[:3, 3] = 0.25
    nearest = resample_onto(mask, np.eye(4), mask.shape, target, order=0)
    assert nearest.dtype == np.bool_ and nearest.sum() == 64
    linear = resample_onto(mask, np.eye(4), mask.shape, target, order=1)
    assert linear.dtype == np.float32 and linear.min() >= 0 and linear.max() == 1
    assert linear.sum() == pytest.approx(64, abs=1e-4)  # the shifted cube stays inside the grid


@pytest.mark.parametrize("order", [0, 1, 3])
def test_stack_resamples_every_channel_identically(order):
    rng = np.random.default_rng(4)
    image = rng.normal(size=(8, 9, 10)).astype(np.float32)
    stack = np.stack([image, image, 2 * image + 1, np.flip(image, 0)])
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    target = rotation_z(17) @ np.diag([0.9, 1.3, 1.1, 1.0])
    target[:3, 3] = [1.5, -0.7, 2.2]
    result = resample_onto(stack, affine, (7, 8, 9), target, order)
    assert result.shape == (4, 7, 8, 9) and result.dtype == np.float32
    np.testing.assert_array_equal(resample_onto(stack, affine, (4, 7, 8, 9), target, order), result)
    for c in range(4):
        np.testing.assert_array_equal(result[c], resample_onto(stack[c], affine, (7, 8, 9), target, order))
    np.testing.assert_array_equal(result[0], result[1])
    assert np.abs(result[0]).max() > 0


def test_order_0_resample_of_float_image_keeps_dtype_and_outside_is_zero():
    data = np.ones((4, 4, 4), dtype=np.float64)
    target = np.eye(4)
    target[:3, 3] = [2.4, 0.0, 0.0]  # half of the target lies beyond the source
    result = resample_onto(data, np.eye(4), (4, 4, 4), target, order=0)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result[:2], 1.0)  # source indices 2.4 and 3.4 are inside the box
    np.testing.assert_array_equal(result[2:], 0.0)


def test_same_grid():
    shape = (10, 20, 30)
    assert same_grid(LPS, LPS.copy(), shape, shape)
    assert same_grid(LPS, LPS, (4, *shape), shape)  # a channel stack and its label map
    assert not same_grid(LPS, LPS, shape, (10, 20, 31))
    nudged = LPS.copy()
    nudged[2, 2] += 1e-4  # 29 voxels * 1e-4 mm = 2.9e-3 mm at the far corner
    assert not same_grid(LPS, nudged, shape, shape)
    assert same_grid(LPS, nudged, shape, shape, tolerance=5e-3)


def test_bad_input_raises_data_error_naming_the_file():
    volume = np.zeros((4, 4, 4), dtype=np.float32)
    singular = np.diag([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(DataError, match=r"^sub-01_T1w\.nii\.gz: affine is singular"):
        reorient_to_canonical(volume, singular, path="sub-01_T1w.nii.gz")
    with pytest.raises(DataError, match=r"^scan\.nii: expected at least 3"):
        resample_to_spacing(np.zeros((4, 4)), np.eye(4), (1, 1, 1), 1, path="scan.nii")
    with pytest.raises(DataError, match=r"^scan\.nii: affine must be 4x4"):
        resample_onto(volume, np.eye(3), (4, 4, 4), np.eye(4), 1, path="scan.nii")
    with pytest.raises(ValueError, match="order"):
        resample_onto(volume, np.eye(4), (4, 4, 4), np.eye(4), 7)
    with pytest.raises(ValueError, match="spacing"):
        resample_to_spacing(volume, np.eye(4), (1, 0, 1), 1)
