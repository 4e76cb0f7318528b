import numpy as np
import pytest

from core.io import DataError
from core.labels import IGNORE_INDEX, LabelSpace, present_values, value_mask


def test_one_class_per_value_maps_iseg_values() -> None:
    labels = LabelSpace.from_values({0: "background", 10: "CSF", 150: "GM", 250: "WM"})
    out = labels.encode(np.array([[0, 10], [150, 250]], dtype=np.float32))
    np.testing.assert_array_equal(out, [[0, 1], [2, 3]])
    assert labels.class_names == ("background", "CSF", "GM", "WM")
    assert labels.class_values == (0, 10, 150, 250) and labels.num_classes == 4


def test_grouped_classes_and_ignored_values() -> None:
    labels = LabelSpace.from_groups({"background": [0], "CSF": [5, 6], "GM": [1, 2], "WM": [3, 4]},
                                    ignore=[7, 8, 9, 10])
    out = labels.encode(np.arange(11, dtype=np.float32))
    np.testing.assert_array_equal(out, [0, 2, 2, 3, 3, 1, 1, -1, -1, -1, -1])
    assert IGNORE_INDEX == -1
    assert labels.class_values == (0, 5, 1, 3)  # each class written back as its group's first value
    assert labels.ignored_values == [7, 8, 9, 10]


def test_regions_are_unions_of_classes() -> None:
    labels = LabelSpace.from_values({0: "background", 1: "NCR", 2: "ED", 4: "ET"})
    regions = labels.with_regions({"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}).regions
    assert regions == (("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)))
    with pytest.raises(ValueError, match=r"region 'X': values \[3\] are not in the label map"):
        labels.with_regions({"X": [3]})


def test_encoding_names_the_file_and_the_bad_values() -> None:
    labels = LabelSpace.from_values({0: "background", 1: "lesion"})
    with pytest.raises(DataError, match=r"seg\.nii\.gz: label values \[-3, 7\] are not in the label map \[0, 1\]"):
        labels.encode(np.array([0, 1, 7, -3], np.float32), "seg.nii.gz")
    with pytest.raises(DataError, match=r"seg\.nii\.gz: label map has non-integer values"):
        labels.encode(np.array([0, 0.5], np.float32), "seg.nii.gz")
    with pytest.raises(DataError, match=r"^seg\.nii\.gz: label map has non-integer values in 2 voxels \(e\.g\. "
                                        r"0\.25, 0\.5\); a label map holds whole numbers: was it resampled with "
                                        r"linear interpolation instead of nearest neighbour\?$"):
        labels.encode(np.array([0, 0.5, 1, 0.25], np.float32), "seg.nii.gz")
    # Stored as scaled floats: 0.9999999 is 1 (within 1e-3), 0.99 is not.
    np.testing.assert_array_equal(labels.encode(np.array([0.0, 0.9999999, 1.0002], np.float32)), [0, 1, 1])
    with pytest.raises(DataError, match=r"non-integer values in 1 voxels \(e\.g\. 0\.99\)"):
        labels.encode(np.array([0.0, 0.99], np.float32))


def test_inconsistent_maps_are_refused() -> None:
    with pytest.raises(ValueError, match="label value 2 is in two classes"):
        LabelSpace.from_groups({"background": [0], "a": [1, 2], "b": [2]})
    with pytest.raises(ValueError, match=r"label values \[1\] are both classes and ignored"):
        LabelSpace.from_values({0: "background", 1: "a"}, ignore=[1])


def test_present_values_and_value_masks_by_hand_and_as_numpy_finds_them() -> None:
    """The counting and lookup-table paths (small non-negative integers) and numpy's (negative or
    large values, floats) give what ``np.unique`` and ``np.isin`` give."""
    labels = np.array([[[0, 4, 4], [2, 0, 250]]], dtype=np.uint8)
    assert present_values(labels) == [0, 2, 4, 250]
    np.testing.assert_array_equal(value_mask(labels, [4, 250, 999]), [[[False, True, True], [False, False, True]]])
    assert present_values(np.zeros((0, 2, 2), np.int16)) == [] and not value_mask(np.zeros((0,), np.int16), [0]).any()
    rng = np.random.default_rng(0)
    for labels in (rng.integers(0, 60, (12, 10, 8)).astype(np.int16), rng.integers(-1, 5, (12, 10, 8)),
                   rng.integers(0, 70000, (6, 5, 4)), rng.integers(0, 4, (6, 5, 4)).astype(np.float32)):
        assert present_values(labels) == np.unique(labels).tolist()
        for values in ([1, 3], [-1], [0, 65000, 69999]):
            np.testing.assert_array_equal(value_mask(labels, values), np.isin(labels, values))
