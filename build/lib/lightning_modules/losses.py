"""Segmentation losses by name, and the conversions between class maps and regions.

Two kinds of target:
- softmax (multi-class) losses take class-index maps (B, 1, ...);
- region (sigmoid, multi-label) losses take multi-hot region maps (B, R, ...) made by
  :meth:`core.labels.LabelSpace.region_targets`.

In both, voxels marked ``IGNORE_INDEX`` count in no loss term. Targets may arrive as floats
(MONAI's ``DeepSupervisionLoss`` resizes them by nearest neighbour, which keeps -1 exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from core.labels import IGNORE_INDEX, masked_one_hot, valid_mask

LOSSES = ("dice", "ce", "dice_ce")


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid elements; 0 (not NaN) when a patch has none."""
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


class _DiceAndCE(nn.Module):
    """A soft Dice term (pooled over the batch) and/or a cross-entropy term."""

    dice_background: bool

    def __init__(self, dice: bool = True, ce: bool = True) -> None:
        super().__init__()
        if not (dice or ce):
            raise ValueError("a loss needs a Dice term, a cross-entropy term or both")
        self.dice = DiceLoss(include_background=self.dice_background, batch=True) if dice else None
        self.ce = ce


class SoftmaxLoss(_DiceAndCE):
    """Soft Dice over the foreground classes (pooled over the batch, as nnU-Net) and/or
    cross-entropy, for (B, C, ...) logits against a (B, 1, ...) class map.

    Without ignored voxels this is MONAI's ``DiceLoss``/``DiceCELoss`` (``softmax``,
    ``to_onehot_y``, ``include_background=False``, ``batch=True``). Ignored voxels are
    left out of the cross-entropy mean, and both the softmax probabilities and the one-hot
    target are zeroed there *after* the softmax, so they add nothing to the Dice.
    """

    dice_background = False  # the background channel is left out of the Dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] != 1:
            raise ValueError(f"expected a class-index map (B, 1, ...), got target of shape {tuple(target.shape)}")
        target = target.long()  # DeepSupervisionLoss hands over resized float targets
        loss = logits.new_zeros(())
        if self.ce:
            per_voxel = F.cross_entropy(logits, torch.where(target == IGNORE_INDEX, 0, target)[:, 0], reduction="none")
            loss = loss + _masked_mean(per_voxel, valid_mask(target[:, 0]))
        if self.dice is not None:
            valid = valid_mask(target)
            loss = loss + self.dice(torch.softmax(logits, dim=1) * valid, masked_one_hot(target, logits.shape[1]))
        return loss


class RegionLoss(_DiceAndCE):
    """Soft Dice over every region channel (pooled over the batch) and/or binary
    cross-entropy with logits, for (B, R, ...) logits against multi-hot region targets
    (B, R, ...) from :meth:`core.labels.LabelSpace.region_targets`.

    Every channel counts: a region is foreground by definition, there is no background
    channel to leave out. Ignored voxels (``IGNORE_INDEX`` in the target) are zeroed in both
    the sigmoid probabilities and the targets for the Dice, and left out of the BCE mean.
    """

    dice_background = True  # every region channel is foreground

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] != logits.shape[1]:
            raise ValueError(f"{logits.shape[1]} region outputs for {target.shape[1]} region targets; "
                             "convert class maps with LabelSpace.region_targets() first")
        target = target.float()
        valid = valid_mask(target)
        target = target * valid  # -1 -> 0, so the ignored voxels are inert everywhere
        loss = logits.new_zeros(())
        if self.ce:
            per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = loss + _masked_mean(per_voxel, valid)
        if self.dice is not None:
            loss = loss + self.dice(torch.sigmoid(logits) * valid, target)
        return loss


def build_loss(name: str, region_based: bool = False) -> nn.Module:
    """``dice``: soft Dice; ``ce``: cross-entropy; ``dice_ce``: their sum, weight 1 each.

    Softmax over classes by default (Dice over the foreground classes, as nnU-Net);
    with ``region_based``, one sigmoid per region (Dice over every region, binary
    cross-entropy). Either way, ``IGNORE_INDEX`` voxels of the target count nowhere.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    kind = RegionLoss if region_based else SoftmaxLoss
    return kind(dice=name in ("dice", "dice_ce"), ce=name in ("ce", "dice_ce"))
