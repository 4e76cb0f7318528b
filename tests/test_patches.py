import itertools
import warnings

import numpy as np
import pytest

from datamodules.patches import ForegroundPatchSampler, foreground_counts, pad_to_patch


def test_foreground_counts_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((7, 8, 9)) < 0.1
    patch = (3, 4, 2)
    counts = foreground_counts(mask, patch)
    assert counts.shape == (5, 5, 8)
    for z, y, x in itertools.product(range(5), range(5), range(8)):
        assert counts[z, y, x] == mask[z : z + 3, y : y + 4, x : x + 2].sum()


def test_sampler_draws_only_patches_with_foreground_and_reaches_all_of_them() -> None:
    label = np.zeros((10, 10, 10), dtype=np.int64)
    label[5, 5, 5] = 2  # a single foreground voxel
    sampler = ForegroundPatchSampler(label, (4, 4, 4))
    # Corners 2..5 on each axis put the voxel inside the patch: 4**3 valid positions.
    assert len(sampler) == 64
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2000):
        z, y, x = sampler.sample(rng)
        assert label[z : z + 4, y : y + 4, x : x + 4].sum() > 0
        seen.add((z, y, x))
    assert len(seen) == 64


def test_min_foreground_voxels_threshold() -> None:
    label = np.zeros((8, 8, 8), dtype=np.int64)
    label[:4] = 1  # half the volume is foreground
    sampler = ForegroundPatchSampler(label, (4, 4, 4), min_foreground_voxels=64)
    assert len(sampler) == 5 * 5  # only corners with z == 0 see a full patch of foreground
    rng = np.random.default_rng(1)
    assert all(sampler.sample(rng)[0] == 0 for _ in range(100))


def test_sampler_terminates_when_no_patch_meets_the_rule() -> None:
    empty = np.zeros((6, 6, 6), dtype=np.int64)
    with pytest.warns(UserWarning, match="no \\(4, 4, 4\\) patch holds 1 foreground"):
        sampler = ForegroundPatchSampler(empty, (4, 4, 4), name="subject-x")
    assert len(sampler) == 27  # every position is equally (un)suitable: uniform fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(sampler.sample(np.random.default_rng(0))) == 3


def test_pad_to_patch_pads_small_volumes_at_the_end() -> None:
    image = np.ones((2, 3, 8, 5), dtype=np.float32)
    padded = pad_to_patch(image, (4, 4, 4))
    assert padded.shape == (2, 4, 8, 5)
    assert padded[:, 3].sum() == 0 and padded[:, :3].sum() == 2 * 3 * 8 * 5
