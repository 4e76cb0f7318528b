"""Whole-volume prediction shared by ``predict.py`` and ``train.py predict``: probabilities
(optionally averaged over mirrorings), class maps and structure volumes."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_modules.losses import regions_to_classes

if TYPE_CHECKING:  # the module calls these functions itself
    from lightning_modules.segmentation import SegmentationModule

MIRRORINGS = [dims for n in range(4) for dims in itertools.combinations((2, 3, 4), n)]


def probabilities(model: SegmentationModule, image: torch.Tensor, flips: bool = False) -> torch.Tensor:
    """Class (softmax) or region (sigmoid) probabilities (B, C, D, H, W) by sliding windows;
    with ``flips``, the mean over the 8 mirrorings of the volume (test-time augmentation)."""
    activation = (lambda x: torch.softmax(x, 1)) if model.regions is None else torch.sigmoid
    total = None
    with torch.no_grad():
        for dims in MIRRORINGS if flips else [()]:
            flipped = torch.flip(image, dims) if dims else image
            out = activation(model.predict_logits(flipped).float())
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
    return total / (len(MIRRORINGS) if flips else 1)


def classes_from(model: SegmentationModule, probs: torch.Tensor) -> torch.Tensor:
    """Class maps (B, D, H, W): the most probable class, or the regions above 0.5 painted back."""
    if model.regions is None:
        return probs.argmax(dim=1)
    return regions_to_classes(probs > 0.5, model.paint_classes)[:, 0]


def structure_volumes(classes: np.ndarray, affine: np.ndarray, model: SegmentationModule) -> dict[str, float]:
    """Millilitres per foreground class, or per region (the union of its classes)."""
    voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0
    counts = np.bincount(np.asarray(classes).ravel(), minlength=len(model.class_names))
    if model.regions is None:
        return {name: round(float(counts[c] * voxel_ml), 3) for c, name in enumerate(model.class_names) if c > 0}
    return {name: round(float(counts[members].sum() * voxel_ml), 3)
            for name, members in zip(model.region_names, model.regions, strict=True)}
