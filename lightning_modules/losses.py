"""Segmentation losses by name. Targets are class-index maps of shape (B, 1, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

LOSSES = ("dice", "ce", "dice_ce")


class CrossEntropy(nn.Module):
    """Cross-entropy on (B, C, ...) logits against a (B, 1, ...) class-index map."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target[:, 0].long())


def build_loss(name: str) -> nn.Module:
    """``dice``: soft Dice over the foreground classes, pooled over the batch (as nnU-Net);
    ``ce``: cross-entropy; ``dice_ce``: their sum (MONAI's DiceCELoss)."""
    dice_args = {"include_background": False, "to_onehot_y": True, "softmax": True, "batch": True}
    if name == "dice":
        return DiceLoss(**dice_args)
    if name == "ce":
        return CrossEntropy()
    if name == "dice_ce":
        return DiceCELoss(**dice_args)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
