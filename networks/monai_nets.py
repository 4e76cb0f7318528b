"""The field's modern anchors from MONAI, behind the registry's (in_channels, num_classes)
interface and the same clear input checks as our own networks."""

from __future__ import annotations

import torch
from monai.networks import nets

from networks.checks import check_input
from networks.registry import register_network


@register_network("segresnet")
class SegResNet(nets.SegResNet):
    """MONAI's SegResNet (Myronenko 2018's encoder-decoder without the VAE branch): residual
    blocks with group norm, (1, 2, 2, 4) blocks down; sizes divisible by 8."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, init_filters: int = 8,
                 dropout_prob: float | None = None) -> None:
        super().__init__(spatial_dims=3, init_filters=init_filters, in_channels=in_channels,
                         out_channels=num_classes, dropout_prob=dropout_prob)
        self.in_channels = in_channels
        self.size_divisor = 2 ** (len(self.blocks_down) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SegResNet", x, self.in_channels, self.size_divisor)
        return super().forward(x)
