"""Losses with ignored voxels, region targets and the painting of regions back into classes."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss

from core.labels import IGNORE_INDEX, LabelSpace
from lightning_modules.losses import build_loss, masked_one_hot

BRATS = [[1, 2, 3], [1, 3], [3]]  # WT, TC, ET as class indices (0 background, 1 NCR, 2 edema, 3 ET)


def region_space(regions: list[list[int]]) -> LabelSpace:
    """Four classes (background, NCR, edema, ET) with these regions."""
    return LabelSpace.from_legacy(4, regions=regions)


def region_targets(label: torch.Tensor, regions: list[list[int]]) -> torch.Tensor:
    return region_space(regions).region_targets(label)


def row(values: list[int]) -> torch.Tensor:
    """A class map (1, 1, n, 1, 1): voxels in a row, so removing some is plain slicing."""
    return torch.tensor(values).view(1, 1, -1, 1, 1)


def confident(classes: list[int], num_classes: int) -> torch.Tensor:
    """Logits (1, C, n, 1, 1) whose softmax is one-hot (to float precision) on ``classes``."""
    return F.one_hot(torch.tensor(classes), num_classes).T.float().view(1, num_classes, -1, 1, 1) * 40.0 - 20.0


def test_softmax_dice_ignores_wrong_predictions_at_ignored_voxels() -> None:
    # Class 1 truth on voxels 0, 1; predicted on 0, 4, 5. Voxels 4 and 5 are ignored.
    target = row([1, 1, 0, 0, IGNORE_INDEX, IGNORE_INDEX])
    logits = confident([1, 0, 0, 0, 1, 1], 2)
    # Foreground Dice over the four scored voxels: 2 * 1 / (1 + 2) = 2/3.
    assert build_loss("dice")(logits, target).item() == pytest.approx(1 / 3, abs=1e-5)
    # Counting the ignored voxels as background would give 2 * 1 / (3 + 2) = 0.4 instead.
    assert build_loss("dice")(logits, target.clamp_min(0)).item() == pytest.approx(0.6, abs=1e-5)


@pytest.mark.parametrize("name", ["dice", "ce", "dice_ce"])
def test_softmax_losses_equal_the_same_case_with_ignored_voxels_removed(name: str) -> None:
    torch.manual_seed(0)
    target = row([0, 1, 2, IGNORE_INDEX, 2, 1, IGNORE_INDEX, 0, IGNORE_INDEX, 2])
    logits = torch.randn(1, 3, 10, 1, 1)
    logits[:, :, 3] = torch.tensor([9.0, -9.0, -9.0]).view(1, 3, 1, 1)  # confidently wrong, yet ignored
    kept = (target != IGNORE_INDEX).view(-1)
    loss = build_loss(name)
    assert loss(logits, target).item() == pytest.approx(loss(logits[:, :, kept], target[:, :, kept]).item(), rel=1e-6)


def test_cross_entropy_is_torch_cross_entropy_over_the_scored_voxels() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(2, 4, 3, 4, 5), torch.randint(0, 4, (2, 1, 3, 4, 5))
    target[torch.rand(target.shape) < 0.3] = IGNORE_INDEX
    kept = target[:, 0] != IGNORE_INDEX
    expected = F.cross_entropy(logits.movedim(1, -1)[kept], target[:, 0][kept])
    assert build_loss("ce")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # torch's own ignore_index gives the same mean.
    torch_ce = F.cross_entropy(logits, target[:, 0], ignore_index=IGNORE_INDEX)
    assert build_loss("ce")(logits, target).item() == pytest.approx(torch_ce.item(), rel=1e-6)


def test_without_ignored_voxels_the_losses_are_monais() -> None:
    torch.manual_seed(2)
    logits, target = torch.randn(2, 4, 6, 5, 4), torch.randint(0, 4, (2, 1, 6, 5, 4))
    args = {"include_background": False, "to_onehot_y": True, "softmax": True, "batch": True}
    torch.testing.assert_close(build_loss("dice")(logits, target), DiceLoss(**args)(logits, target))
    torch.testing.assert_close(build_loss("dice_ce")(logits, target), DiceCELoss(**args)(logits, target))
    torch.testing.assert_close(build_loss("ce")(logits, target), F.cross_entropy(logits, target[:, 0]))


def test_a_patch_with_every_voxel_ignored_has_zero_loss_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    target = torch.full((1, 1, 4, 4, 4), IGNORE_INDEX)
    for name in ("dice", "ce", "dice_ce"):
        assert build_loss(name)(logits, target).item() == 0.0
        loss = build_loss(name, region_based=True)(logits, region_targets(target, BRATS))
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_deep_supervision_float_targets_keep_ignored_voxels() -> None:
    """``DeepSupervisionLoss`` resizes a float target by nearest neighbour; -1 must survive
    and the loss cast it back to class indices."""
    torch.manual_seed(3)
    target = torch.randint(0, 3, (1, 1, 8, 8, 8))
    # MONAI resizes with "nearest-exact": a half-size head sees the odd slices. Ignore exactly those.
    target[:, :, 1::2] = IGNORE_INDEX
    main, head = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)
    loss = DeepSupervisionLoss(build_loss("ce"), weight_mode="exp")([main, head], target.float())
    expected = F.cross_entropy(main, target[:, 0], ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # the head sees only ignored voxels: 0


def test_masked_one_hot_is_zero_at_ignored_voxels() -> None:
    hot = masked_one_hot(row([2, IGNORE_INDEX, 0]), 3)[0, :, :, 0, 0]
    assert hot.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


def test_region_targets_are_multi_hot_and_mark_ignored_voxels() -> None:
    label = row([0, 1, 2, 3, IGNORE_INDEX])
    regions = region_targets(label, BRATS)[0, :, :, 0, 0]
    assert regions.dtype == torch.float32
    assert regions.tolist() == [[0, 1, 1, 1, -1],   # WT
                                [0, 1, 0, 1, -1],   # TC
                                [0, 0, 0, 1, -1]]   # ET


def test_region_loss_ignores_voxels_and_matches_monai_without_them() -> None:
    torch.manual_seed(4)
    label = torch.randint(0, 4, (2, 1, 5, 4, 3))
    logits = torch.randn(2, 3, 5, 4, 3)
    target = region_targets(label, BRATS)
    # Nothing ignored: MONAI's sigmoid Dice over every channel, and the plain BCE mean.
    dice = DiceLoss(include_background=True, sigmoid=True, batch=True)(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(build_loss("dice", region_based=True)(logits, target), dice)
    torch.testing.assert_close(build_loss("ce", region_based=True)(logits, target), bce)
    torch.testing.assert_close(build_loss("dice_ce", region_based=True)(logits, target), dice + bce)
    # Ignored voxels, confidently wrong: the same as removing them.
    label = row([0, 1, 2, 3, IGNORE_INDEX, 3, IGNORE_INDEX, 2])
    logits = torch.randn(1, 3, 8, 1, 1)
    logits[:, :, [4, 6]] = 9.0
    kept = (label != IGNORE_INDEX).view(-1)
    for name in ("dice", "ce", "dice_ce"):
        loss = build_loss(name, region_based=True)
        removed = loss(logits[:, :, kept], region_targets(label[:, :, kept], BRATS))
        assert loss(logits, region_targets(label, BRATS)).item() == pytest.approx(removed.item(), rel=1e-6)


def test_region_loss_wants_region_targets() -> None:
    with pytest.raises(ValueError, match="region_targets"):
        build_loss("dice", region_based=True)(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="class-index map"):
        build_loss("dice")(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4))


def test_brats_regions_paint_edema_then_core_then_enhancing() -> None:
    assert region_space(BRATS).paint_classes == [2, 1, 3]
    # Voxels: nothing; WT only; WT+TC; WT+TC+ET; ET alone (inconsistent, ET still wins); TC alone.
    regions = torch.tensor([[0, 1, 1, 1, 0, 0],
                            [0, 0, 1, 1, 0, 1],
                            [0, 0, 0, 1, 1, 0]], dtype=torch.bool).view(1, 3, 6, 1, 1)
    classes = region_space(BRATS).paint(regions)
    assert classes.shape == (1, 1, 6, 1, 1)
    assert classes.view(-1).tolist() == [0, 2, 1, 3, 3, 1]


def test_painting_gives_back_the_classes_of_nested_regions() -> None:
    label = torch.randint(0, 4, (2, 1, 5, 6, 7))
    assert torch.equal(region_space(BRATS).paint(region_targets(label, BRATS) > 0), label)


@pytest.mark.parametrize("regions", [[[1], [1, 2]], [[1, 2], [3]], [[1, 2, 3], [1, 3]]])
def test_regions_that_cannot_be_painted_back_are_an_error(regions: list[list[int]]) -> None:
    # [1] is inside a later region; [1, 2] then [3] leaves two classes to the first region;
    # WT then TC leaves two classes (1, 3) to TC.
    with pytest.raises(ValueError, match="needs exactly one"):
        region_space(regions)
