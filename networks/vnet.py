"""V-Net (Milletari et al., 3DV 2016) and the thesis' lighter V-Net (chapter 3.6, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from networks.checks import check_input
from networks.registry import SmokeSettings, register_network


def _conv5(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(channels, channels, kernel_size=5, padding=2), nn.BatchNorm3d(channels),
                         nn.PReLU(channels))


class _ResidualConvs(nn.Module):
    """``n_convs`` 5x5x5 convolutions (batch norm, PReLU); the stage's input is added to the
    last convolution's output before its activation: V-Net's residual stage."""

    def __init__(self, channels: int, n_convs: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[_conv5(channels) for _ in range(n_convs - 1)])
        self.last = nn.Sequential(nn.Conv3d(channels, channels, kernel_size=5, padding=2), nn.BatchNorm3d(channels))
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.last(self.convs(x)) + x)


class _InputStage(nn.Module):
    """A 5x5x5 convolution to the first stage's maps (16 in the paper) plus the input itself. The
    paper replicates its one-channel input 16 times; several channels are replicated when they
    divide the maps, else projected by a 1x1x1 convolution, so any number of modalities works."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=5, padding=2),
                                  nn.BatchNorm3d(out_channels))
        self.repeats = out_channels // in_channels if out_channels % in_channels == 0 else 0
        self.project = None if self.repeats else nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.repeat(1, self.repeats, 1, 1, 1) if self.repeats else self.project(x)
        return self.act(self.conv(x) + shortcut)


class _Down(nn.Module):
    """A 2x2x2 stride-2 convolution that doubles the channels, then a residual stage."""

    def __init__(self, in_channels: int, n_convs: int, dropout: float) -> None:
        super().__init__()
        out_channels = 2 * in_channels
        self.down = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=2, stride=2),
                                  nn.BatchNorm3d(out_channels), nn.PReLU(out_channels))
        self.dropout = nn.Dropout3d(dropout) if dropout else nn.Identity()
        self.stage = _ResidualConvs(out_channels, n_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.dropout(self.down(x)))


class _Up(nn.Module):
    """A 2x2x2 stride-2 transposed convolution to ``out_channels / 2``, concatenated with the
    skip (``out_channels / 2`` channels), then a residual stage on ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, n_convs: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose3d(in_channels, out_channels // 2, kernel_size=2, stride=2),
                                nn.BatchNorm3d(out_channels // 2), nn.PReLU(out_channels // 2))
        self.dropout = nn.Dropout3d(dropout) if dropout else nn.Identity()
        self.stage = _ResidualConvs(out_channels, n_convs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(torch.cat([self.up(self.dropout(x)), skip], dim=1))


class _VNetBase(nn.Module):
    """Shared encoder-decoder; subclasses give the stages as (convolutions, dropout) lists.
    ``base_channels``: the maps of the first stage, doubled at each down-step (16 in the paper;
    fewer for small GPUs and quick checks)."""

    down_stages: tuple[tuple[int, bool], ...] = ()
    up_stages: tuple[tuple[int, bool], ...] = ()

    def __init__(self, in_channels: int = 1, num_classes: int = 4, dropout: float = 0.2,
                 base_channels: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_channels < 1:
            raise ValueError(f"{type(self).__name__} needs in_channels, num_classes and base_channels >= 1, "
                             f"got {in_channels}, {num_classes} and {base_channels}")
        self.in_channels = in_channels
        self.input_stage = _InputStage(in_channels, base_channels)
        channels = [base_channels]
        self.down = nn.ModuleList()
        for n_convs, drop in self.down_stages:
            self.down.append(_Down(channels[-1], n_convs, dropout if drop else 0.0))
            channels.append(2 * channels[-1])
        self.up = nn.ModuleList()
        current = channels[-1]
        for (n_convs, drop), skip in zip(self.up_stages, reversed(channels[:-1]), strict=True):
            self.up.append(_Up(current, 2 * skip, n_convs, dropout if drop else 0.0))
            current = 2 * skip
        self.head = nn.Sequential(nn.Conv3d(current, num_classes, kernel_size=5, padding=2),
                                  nn.BatchNorm3d(num_classes), nn.PReLU(num_classes),
                                  nn.Conv3d(num_classes, num_classes, kernel_size=1))

    @property
    def size_divisor(self) -> int:
        return 2 ** len(self.down_stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels, self.size_divisor)
        skips = [self.input_stage(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        out = skips.pop()
        for up in self.up:
            out = up(out, skips.pop())
        return self.head(out)


@register_network("vnet", smoke=SmokeSettings({"dropout": 0.0, "base_channels": 4}, (16, 16, 32), size_divisor=16),
                  channels_last=True)
class VNet(_VNetBase):
    """V-Net: 5x5x5 convolutions with PReLU, residual stages of 1-3 convolutions, strided
    2x2x2 down-convolutions (16 -> 256 channels over four steps), transposed-convolution
    up-steps with skip connections. Output size equals input size (divisible by 16)."""

    down_stages = ((1, False), (2, False), (3, True), (2, True))
    up_stages = ((2, True), (2, True), (1, False), (1, False))


@register_network("vnet_light", smoke=SmokeSettings({"dropout": 0.0, "base_channels": 4}, (8, 16, 24),
                                                   size_divisor=8), channels_last=True)
class VNetLight(_VNetBase):
    """The thesis' lighter V-Net: V-Net without its deepest stage (three down-steps, 16 ->
    128 channels). Output size equals input size (divisible by 8)."""

    down_stages = ((1, False), (2, False), (3, True))
    up_stages = ((2, True), (1, False), (1, False))
