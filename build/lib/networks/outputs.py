"""What a network may return in training mode besides plain logits, and the conventions the
SegmentationModule relies on to line output and target up.

Conventions every registered network follows:
- ``forward(x)`` takes (batch, in_channels, D, H, W) and, in eval mode, returns logits
  (batch, num_classes, D - 2b, H - 2b, W - 2b), where ``b = network.border`` (0 unless the
  network uses unpadded convolutions; then the output is the centre of the input).
- In training mode a network with extra outputs returns a ``TrainingOutput`` instead, so
  deep-supervision heads and regularisation losses are trained, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TrainingOutput:
    """A training-mode forward pass with more than the main logits.

    Attributes:
        logits: the main output, as in eval mode.
        deep_supervision: auxiliary logits, most important first; each is scored against the
            target resized to its own spatial size (nearest neighbour), with weights 1/2, 1/4, ...
            after the main output's 1 (MONAI's ``DeepSupervisionLoss``, mode ``exp``).
        regularisers: extra loss terms, already weighted (e.g. ``{"vae": 0.1 * l2_plus_kl}``),
            added to the segmentation loss and logged under their names.
    """

    logits: torch.Tensor
    deep_supervision: list[torch.Tensor] = field(default_factory=list)
    regularisers: dict[str, torch.Tensor] = field(default_factory=dict)


def as_training_output(output: torch.Tensor | TrainingOutput) -> TrainingOutput:
    """Wrap plain logits so the module handles every network alike."""
    return output if isinstance(output, TrainingOutput) else TrainingOutput(output)


def network_border(network: nn.Module) -> int:
    """Voxels an unpadded network loses on each side of each spatial axis (0 when padded)."""
    return int(getattr(network, "border", 0))
