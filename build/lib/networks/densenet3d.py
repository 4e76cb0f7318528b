"""The 3D-DenseNet family of the thesis (chapter 3.8-3.9), after Dolz et al.'s multi-modal
dense networks ("HyperDense-Net", IEEE TMI 2019, the thesis' reference [5]).

Shared design, as in the paper: nine unpadded 3x3x3 convolutions (BN-ReLU-Conv, pre-activation)
with 25, 25, 25, 50, 50, 50, 75, 75, 75 kernels; every layer's input is the concatenation of
all earlier feature maps (cropped to the same size), so the output loses 9 voxels on each side
(``border = 9``); then 1x1x1 convolutions of 400, 200 and 150 maps (the paper's fully connected
layers, with dropout) and a 1x1x1 classifier. No pooling: the networks see sub-volumes (the
thesis: 32^3 for training) and are applied to larger windows at inference.

The family differs only in where the modalities meet:
- ``densenet3d``: one path, modalities stacked as channels (single path, ~2.7 M at 1 channel).
- ``densenet3d_early_fusion``: one first layer per modality, fused after it (2 streams ~3.0 M,
  3 streams ~3.3 M; the thesis' "2-stream / 3-stream early fusion").
- ``densenet3d_late_fusion``: a whole path per modality, fused before the classifier (2 streams ~5.4 M).
- ``hyperdensenet``: one path per modality with dense links across the paths (Dolz et al.'s
  HyperDenseNet; every layer sees every earlier layer of every path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from networks.checks import check_input
from networks.registry import SmokeSettings, register_network

KERNELS = (25, 25, 25, 50, 50, 50, 75, 75, 75)
FULLY_CONNECTED = (400, 200, 150)

# Small DenseNets for the tests: four layers, two fully connected.
SMOKE_KWARGS = {"dropout": 0.0, "kernels": [4, 4, 8, 8], "fully_connected": [16, 8]}


def _crop(x: torch.Tensor, voxels: int) -> torch.Tensor:
    """The centre of ``x`` with ``voxels`` removed from each side of each spatial axis."""
    if voxels == 0:
        return x
    return x[:, :, voxels:-voxels, voxels:-voxels, voxels:-voxels]


def _bn_relu_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """A pre-activation unpadded 3x3x3 convolution (the output is 2 voxels smaller)."""
    return nn.Sequential(
        nn.BatchNorm3d(in_channels),
        nn.ReLU(inplace=False),
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=0, bias=False),
    )


class _DenseBlock(nn.Module):
    """Unpadded dense block: each layer sees the concatenation of the input and all earlier
    layers' outputs, cropped to its own size; returns that concatenation after the last layer."""

    def __init__(self, in_channels: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        channels = in_channels
        for k in kernels:
            self.layers.append(_bn_relu_conv(channels, k))
            channels += k
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([_crop(x, 1), layer(x)], dim=1)
        return x


def _fully_connected(in_channels: int, widths: Sequence[int], dropout: float) -> nn.Sequential:
    """The paper's fully connected layers as 1x1x1 convolutions (400, 200, 150 maps), with dropout."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv3d(in_channels, width, kernel_size=1), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_channels = width
    return nn.Sequential(*layers)


class _DenseNetBase(nn.Module):
    """Argument checks, the input check and the border shared by the family.

    ``kernels`` (maps per unpadded layer) and ``fully_connected`` (1x1x1 widths) default to the
    paper's; smaller values make quick tests. The border is one voxel per layer.
    """

    min_streams = 1

    def __init__(self, in_channels: int, num_classes: int, dropout: float, kernels: Sequence[int],
                 fully_connected: Sequence[int]) -> None:
        super().__init__()
        name = type(self).__name__
        if in_channels < self.min_streams or num_classes < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"{name} needs in_channels >= {self.min_streams} (one stream per modality), num_classes >= 1 "
                f"and 0 <= dropout < 1 (got {in_channels}, {num_classes}, {dropout})"
            )
        if len(kernels) < 2 or not fully_connected or min(*kernels, *fully_connected) < 1:
            raise ValueError(f"{name} needs at least two layers and positive widths "
                             f"(got kernels={list(kernels)}, fully_connected={list(fully_connected)})")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.kernels = tuple(kernels)
        self.widths = tuple(fully_connected)
        self.border = len(self.kernels)

    def check(self, x: torch.Tensor) -> None:
        check_input(type(self).__name__, x, self.in_channels, min_size=2 * self.border + 1)


@register_network("densenet3d", smoke=SmokeSettings(SMOKE_KWARGS, (10, 11, 13)))
class DenseNet3D(_DenseNetBase):
    """Single-path 3D-DenseNet: all modalities enter one dense path as channels."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.5,
                 kernels: Sequence[int] = KERNELS, fully_connected: Sequence[int] = FULLY_CONNECTED) -> None:
        super().__init__(in_channels, num_classes, dropout, kernels, fully_connected)
        self.block = _DenseBlock(in_channels, self.kernels)
        self.fully_connected = _fully_connected(self.block.out_channels, self.widths, dropout)
        self.classifier = nn.Conv3d(self.widths[-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.classifier(self.fully_connected(self.block(x)))


@register_network("densenet3d_early_fusion", smoke=SmokeSettings(SMOKE_KWARGS, (10, 11, 13), min_in_channels=2))
class DenseNet3DEarlyFusion(_DenseNetBase):
    """One first layer per modality; their outputs (with the cropped modality) are concatenated
    and the remaining eight layers run as one dense path."""

    min_streams = 2

    def __init__(self, in_channels: int = 2, num_classes: int = 2, dropout: float = 0.5,
                 kernels: Sequence[int] = KERNELS, fully_connected: Sequence[int] = FULLY_CONNECTED) -> None:
        super().__init__(in_channels, num_classes, dropout, kernels, fully_connected)
        self.first_layers = nn.ModuleList(_bn_relu_conv(1, self.kernels[0]) for _ in range(in_channels))
        self.block = _DenseBlock(in_channels * (1 + self.kernels[0]), self.kernels[1:])
        self.fully_connected = _fully_connected(self.block.out_channels, self.widths, dropout)
        self.classifier = nn.Conv3d(self.widths[-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        streams = [torch.cat([_crop(m, 1), layer(m)], dim=1)
                   for m, layer in zip(x.split(1, dim=1), self.first_layers, strict=True)]
        return self.classifier(self.fully_connected(self.block(torch.cat(streams, dim=1))))


@register_network("densenet3d_late_fusion", smoke=SmokeSettings(SMOKE_KWARGS, (10, 11, 13), min_in_channels=2))
class DenseNet3DLateFusion(_DenseNetBase):
    """A full dense path (dense block and fully connected layers) per modality; the paths'
    150-map outputs are concatenated before the 1x1x1 classifier (thesis chapter 3.9)."""

    min_streams = 2

    def __init__(self, in_channels: int = 2, num_classes: int = 2, dropout: float = 0.5,
                 kernels: Sequence[int] = KERNELS, fully_connected: Sequence[int] = FULLY_CONNECTED) -> None:
        super().__init__(in_channels, num_classes, dropout, kernels, fully_connected)
        self.paths = nn.ModuleList()
        for _ in range(in_channels):
            block = _DenseBlock(1, self.kernels)
            self.paths.append(nn.Sequential(block, _fully_connected(block.out_channels, self.widths, dropout)))
        self.classifier = nn.Conv3d(in_channels * self.widths[-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        features = [path(m) for m, path in zip(x.split(1, dim=1), self.paths, strict=True)]
        return self.classifier(torch.cat(features, dim=1))


@register_network("hyperdensenet", smoke=SmokeSettings(SMOKE_KWARGS, (10, 11, 13), min_in_channels=2))
class HyperDenseNet(_DenseNetBase):
    """HyperDenseNet: one path per modality; layer l of every path takes the outputs of layers
    1..l-1 of all paths (its own path's maps first, as the paper's shuffled ordering puts them),
    so the paths exchange features at every depth. The first layer sees only its modality."""

    min_streams = 2

    def __init__(self, in_channels: int = 2, num_classes: int = 2, dropout: float = 0.5,
                 kernels: Sequence[int] = KERNELS, fully_connected: Sequence[int] = FULLY_CONNECTED) -> None:
        super().__init__(in_channels, num_classes, dropout, kernels, fully_connected)
        self.layers = nn.ModuleList()
        seen = 0  # maps per path produced so far
        for depth, k in enumerate(self.kernels):
            width = 1 if depth == 0 else in_channels * seen
            self.layers.append(nn.ModuleList(_bn_relu_conv(width, k) for _ in range(in_channels)))
            seen += k
        self.fully_connected = _fully_connected(in_channels * seen, self.widths, dropout)
        self.classifier = nn.Conv3d(self.widths[-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        paths: list[list[torch.Tensor]] = [[] for _ in range(self.in_channels)]  # per path, its layers' maps
        inputs = list(x.split(1, dim=1))
        for depth, convs in enumerate(self.layers):
            outputs = [conv(inputs[s]) for s, conv in enumerate(convs)]
            for s, out in enumerate(outputs):
                paths[s] = [_crop(f, 1) for f in paths[s]] + [out]
            if depth + 1 < len(self.layers):
                mine_first = [paths[s:] + paths[:s] for s in range(self.in_channels)]
                inputs = [torch.cat([f for path in order for f in path], dim=1) for order in mine_first]
        return self.classifier(self.fully_connected(torch.cat([f for path in paths for f in path], dim=1)))
