"""SkipDenseNet3D: the skip-connected 3D DenseNet of Bui, Shin and Moon, "3D Densely
Convolutional Networks for Volumetric Segmentation" (arXiv 1709.03199, 2017; the iSeg-2017
infant-brain network, later "3D-SkipDenseSeg").

Faithful to the paper: three 3x3x3 convolutions (32 maps) at full resolution, then a 2x2x2
stride-2 convolution instead of pooling; four dense blocks of 4 bottleneck layers
(BN-ReLU-Conv1x1x1(4k)-BN-ReLU-Conv3x3x3(k), growth rate k = 16) with dropout after each layer;
between blocks a transition of BN-ReLU-Conv1x1x1 compressing by 0.5 and BN-ReLU-Conv2x2x2
stride 2 (32 -> 96 -> 48 -> 112 -> 56 -> 120 -> 60 -> 124 maps); from each block a transposed
convolution straight back to full resolution; the four upsampled branches and the full-resolution
features concatenated, then BN-ReLU and a 1x1x1 classifier.

Choices, where the paper's text leaves them open (following its figure and the authors'
released code): each upsampling branch is a transposed convolution of stride s = 2, 4, 8, 16,
kernel s + 2 and padding 1, giving ``upsample_channels`` = 4 maps, grouped in 4 groups (so its
input width must be divisible by 4; checked); the branch width is a fixed hyperparameter rather
than the class count, so the architecture does not change with ``num_classes``. The
full-resolution features join the concatenation before their batch norm. Dropout 0.2, as in the
authors' training script. Convolutions are padded, so the output has the input's size; every
spatial size must be divisible by 16 (four halvings). About 1.55 M parameters at the defaults
(1 input channel, 4 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from networks.checks import check_input
from networks.registry import SmokeSettings, register_network


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.ReLU(inplace=True)]


class _BottleneckLayer(nn.Module):
    """BN-ReLU-Conv1x1x1(bottleneck) - BN-ReLU-Conv3x3x3(growth_rate) - Dropout, concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *_bn_relu(in_channels), nn.Conv3d(in_channels, bottleneck, kernel_size=1, bias=False),
            *_bn_relu(bottleneck), nn.Conv3d(bottleneck, growth_rate, kernel_size=3, padding=1, bias=False),
            nn.Dropout(dropout) if dropout else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], dim=1)


class _DenseBlock(nn.Sequential):
    """``num_layers`` bottleneck layers: ``in_channels + num_layers * growth_rate`` maps out."""

    def __init__(self, in_channels: int, num_layers: int, growth_rate: int, bottleneck: int, dropout: float) -> None:
        super().__init__(*[_BottleneckLayer(in_channels + i * growth_rate, growth_rate, bottleneck, dropout)
                           for i in range(num_layers)])
        self.out_channels = in_channels + num_layers * growth_rate


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1x1 (compression) then BN-ReLU-Conv2x2x2 stride 2 (downsampling)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(*_bn_relu(in_channels), nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False),
                         *_bn_relu(out_channels), nn.Conv3d(out_channels, out_channels, kernel_size=2, stride=2,
                                                            bias=False))


@register_network("skipdensenet3d", smoke=SmokeSettings(
    {"init_features": 8, "growth_rate": 4, "layers_per_block": 2, "dropout": 0.0}, input_size=(16, 16, 32),
    size_divisor=16))
class SkipDenseNet3D(nn.Module):
    """Skip-connected 3D DenseNet (Bui et al. 2017): dense blocks at 1/2 .. 1/16 resolution,
    each upsampled straight to full resolution and concatenated with the full-resolution
    features for a 1x1x1 classifier.

    Args:
        in_channels: input modalities (any number >= 1; T1 and T2 in the paper).
        num_classes: output classes (>= 2).
        init_features: maps of the three full-resolution convolutions; 32 in the paper.
        growth_rate: maps each bottleneck layer adds (k); 16 in the paper.
        layers_per_block: layers in each of the four dense blocks; 4 in the paper.
        bottleneck_factor: the 1x1x1 convolution gives ``bottleneck_factor * growth_rate`` maps; 4.
        compression: the transitions keep ``floor(compression * width)`` maps; 0.5.
        dropout: dropout rate after each bottleneck layer; 0.2.
        upsample_channels: maps (and groups) of each upsampling branch; 4.
    """

    num_blocks = 4

    def __init__(self, in_channels: int = 1, num_classes: int = 2, init_features: int = 32, growth_rate: int = 16,
                 layers_per_block: int = 4, bottleneck_factor: int = 4, compression: float = 0.5,
                 dropout: float = 0.2, upsample_channels: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"SkipDenseNet3D needs in_channels >= 1 and num_classes >= 1 "
                             f"(got {in_channels}, {num_classes})")
        if min(init_features, growth_rate, layers_per_block, bottleneck_factor, upsample_channels) < 1:
            raise ValueError(f"SkipDenseNet3D needs init_features, growth_rate, layers_per_block, bottleneck_factor "
                             f"and upsample_channels >= 1 (got {init_features}, {growth_rate}, {layers_per_block}, "
                             f"{bottleneck_factor}, {upsample_channels})")
        if not 0.0 < compression <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"SkipDenseNet3D needs 0 < compression <= 1 and 0 <= dropout < 1 "
                             f"(got {compression}, {dropout})")
        self.in_channels = in_channels
        self.num_classes = num_classes
        f = init_features

        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, f, kernel_size=3, padding=1, bias=False), *_bn_relu(f),
            nn.Conv3d(f, f, kernel_size=3, padding=1, bias=False), *_bn_relu(f),
            nn.Conv3d(f, f, kernel_size=3, padding=1, bias=False),
        )
        self.down = nn.Sequential(*_bn_relu(f), nn.Conv3d(f, f, kernel_size=2, stride=2, bias=False))
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        width = f
        for i in range(self.num_blocks):
            block = _DenseBlock(width, layers_per_block, growth_rate, bottleneck_factor * growth_rate, dropout)
            self.blocks.append(block)
            width = block.out_channels
            if width % upsample_channels:
                raise ValueError(f"SkipDenseNet3D's dense block {i + 1} gives {width} maps, not divisible by "
                                 f"upsample_channels={upsample_channels} (its upsampling is grouped); "
                                 f"change init_features, growth_rate or layers_per_block")
            stride = 2 ** (i + 1)
            self.upsamplers.append(nn.ConvTranspose3d(width, upsample_channels, kernel_size=stride + 2, stride=stride,
                                                      padding=1, groups=upsample_channels, bias=False))
            if i < self.num_blocks - 1:
                compressed = max(1, int(compression * width))
                self.transitions.append(_Transition(width, compressed))
                width = compressed
        concat = self.num_blocks * upsample_channels + f
        self.head = nn.Sequential(*_bn_relu(concat), nn.Conv3d(concat, num_classes, kernel_size=1))

    @property
    def size_divisor(self) -> int:
        return 2**self.num_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SkipDenseNet3D", x, self.in_channels, self.size_divisor)
        full = self.stem(x)
        out = self.down(full)
        branches = []
        for i, (block, upsample) in enumerate(zip(self.blocks, self.upsamplers, strict=True)):
            out = block(out)
            branches.append(upsample(out))
            if i < self.num_blocks - 1:
                out = self.transitions[i](out)
        return self.head(torch.cat([*branches, full], dim=1))
