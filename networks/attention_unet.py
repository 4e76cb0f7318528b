"""Attention U-Net (Oktay et al. 2018) as MONAI builds it: a U-Net whose skip connections pass
through additive attention gates driven by the coarser decoder features, so that the decoder
attends to the structure and not the background."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from monai.networks import nets

from networks.checks import check_input
from networks.registry import SmokeSettings, register_network


@register_network("attention_unet", smoke=SmokeSettings({"channels": (4, 8, 16, 32)}, input_size=(8, 16, 24),
                                                        size_divisor=8), channels_last=True)
class AttentionUNet(nets.AttentionUnet):
    """MONAI's ``AttentionUnet`` behind the registry's (in_channels, num_classes) interface.

    Args:
        channels: feature maps per level, from full resolution down (default 16 .. 256, 5 levels).
        strides: downsampling factor between levels (one fewer than ``channels``; default 2 each),
            so spatial sizes must be divisible by their product.
        dropout: dropout probability in the convolution blocks.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 channels: Sequence[int] = (16, 32, 64, 128, 256), strides: Sequence[int] | None = None,
                 dropout: float = 0.0) -> None:
        strides = tuple(strides) if strides is not None else (2,) * (len(channels) - 1)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"attention_unet: {len(channels)} levels need {len(channels) - 1} strides, got {strides}")
        super().__init__(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=tuple(channels),
                         strides=strides, dropout=dropout)
        self.in_channels = in_channels
        self.size_divisor = prod(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("AttentionUNet", x, self.in_channels, self.size_divisor)
        return super().forward(x)
