"""Building blocks shared by the U-Nets (2D and 3D), so both use the same definition."""

from __future__ import annotations

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def conv_bn_relu(in_channels: int, out_channels: int, spatial_dims: int = 3) -> nn.Sequential:
    """A padded 3x3(x3) convolution without bias, batch norm, ReLU."""
    return nn.Sequential(
        _CONV[spatial_dims](in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        _NORM[spatial_dims](out_channels),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """One U-Net level: two convolutions, each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, spatial_dims: int = 3) -> None:
        super().__init__(conv_bn_relu(in_channels, mid_channels, spatial_dims),
                         conv_bn_relu(mid_channels, out_channels, spatial_dims))


def unet_pass(x: torch.Tensor, encoder: nn.ModuleList, pool: nn.Module, upsamplers: nn.ModuleList,
              decoder: nn.ModuleList, decoder_outputs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The U-Net's contracting then expanding path (2D or 3D): every encoder level but the
    deepest keeps its output as a skip connection, concatenated after upsampling. Each decoder
    level's output is appended to ``decoder_outputs`` when given (deep supervision)."""
    skips = []
    for i, level in enumerate(encoder):
        x = level(x)
        if i < len(encoder) - 1:
            skips.append(x)
            x = pool(x)
    for up, level, skip in zip(upsamplers, decoder, reversed(skips), strict=True):
        x = level(torch.cat([up(x), skip], dim=1))
        if decoder_outputs is not None:
            decoder_outputs.append(x)
    return x
