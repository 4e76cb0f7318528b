import numpy as np
import pytest

from datamodules.io import DataError
from datamodules.preprocessing import map_labels, zscore_nonzero


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


def test_map_labels_maps_iseg_values_to_classes() -> None:
    label = np.array([[0, 10], [150, 250]], dtype=np.float32)
    out = map_labels(label, {0: 0, 10: 1, 150: 2, 250: 3})
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 1], [2, 3]])


def test_map_labels_names_the_file_and_the_unknown_values() -> None:
    label = np.array([0, 10, 100, 251, 10], dtype=np.float32)
    with pytest.raises(DataError, match=r"subject-3-label.hdr: label values \[100, 251\] are not in"):
        map_labels(label, {0: 0, 10: 1, 150: 2, 250: 3}, "subject-3-label.hdr")
