"""Med3D segmentation ResNet (Chen, Ma and Zheng, "Med3D: Transfer Learning for 3D Medical Image
Analysis", arXiv:1904.00625, 2019), after the authors' MedicalNet code (``models/resnet.py``).

Faithful: the 3D ResNet encoder (7x7x7 stride-2 convolution, batch norm, ReLU, 3x3x3 stride-2 max
pooling; layer1 stride 1, layer2 stride 2, layer3 dilation 2, layer4 dilation 4, so the features
stay at 1/8 of the input), BasicBlocks for depths 10/18/34 and Bottlenecks for 50, the
segmentation head ``conv_seg`` (2x2x2 stride-2 transposed convolution to 32 channels, batch norm,
ReLU, 3x3x3 convolution, batch norm, ReLU, bias-free 1x1x1 classifier), MedicalNet's
initialisation (Kaiming normal, fan-out, for the convolutions) and its module names: at
``in_channels=1`` the state-dict keys and shapes are MedicalNet's (without its ``module.`` prefix).
Shortcuts by default follow the settings of MedicalNet's released weights: type B (1x1x1
convolution + batch norm) for depths 10 and 50, type A (parameter-free: subsample, zero-pad the
channels) for 18 and 34.

Choices:
- The head leaves the logits at 1/4 of the input size (MedicalNet downsampled the labels
  instead); this codebase scores outputs at the input's size, so the logits are upsampled x4,
  trilinearly, at the end. Trilinear (not a learned layer) adds no parameters to the paper's.
- Any number of input channels (MedicalNet: one): only the first convolution changes.
- Type A shortcuts pass gradients; MedicalNet's ``Variable(out.data)`` cut them off (a
  leftover of PyTorch 0.4, not a design choice of the paper).
- ``base_features`` (64 in the paper) scales every width (head: ``base_features // 2``), only to
  make small test networks; keep 64 for Med3D itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.checks import check_input
from networks.registry import SmokeSettings, register_network


def _conv3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class _ZeroPadShortcut(nn.Module):
    """Type A shortcut: subsample by ``stride``, then zero-pad the channels up to ``out_channels``."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        x = x[:, :, ::s, ::s, ::s]
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions (batch norm, ReLU) and a residual connection."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3(in_channels, planes, stride, dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (strided / dilated), 1x1x1 expand by 4; residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


# depth -> (block, blocks per layer, shortcut type of MedicalNet's released weights)
DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int], str]] = {
    10: (BasicBlock, (1, 1, 1, 1), "B"),
    18: (BasicBlock, (2, 2, 2, 2), "A"),
    34: (BasicBlock, (3, 4, 6, 3), "A"),
    50: (Bottleneck, (3, 4, 6, 3), "B"),
}


@register_network("med3d", smoke=SmokeSettings({"base_features": 8}, (8, 16, 24), size_divisor=8))
class Med3D(nn.Module):
    """Med3D's dilated 3D ResNet with its segmentation head; logits upsampled x4 to the input size.

    Every spatial size must be divisible by 8 (the stride-2 convolution, max pooling and layer2).
    """

    size_divisor = 2 * 2 * 2  # the only strides: conv1, max pooling, layer2 (layer3/4 dilate instead)
    head_scale = 4  # the head's output is at 1/4 of the input size

    def __init__(self, in_channels: int = 1, num_classes: int = 2, depth: int = 10, base_features: int = 64,
                 shortcut: str | None = None) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"Med3D depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        if in_channels < 1 or num_classes < 1 or base_features < 2:
            raise ValueError(f"Med3D needs in_channels >= 1, num_classes >= 1 and base_features >= 2 "
                             f"(got {in_channels}, {num_classes}, {base_features})")
        if shortcut not in (None, "A", "B"):
            raise ValueError(f"Med3D shortcut must be 'A', 'B' or None (MedicalNet's for the depth), got {shortcut!r}")
        block, layers, default_shortcut = DEPTHS[depth]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.shortcut = shortcut or default_shortcut
        f = base_features
        self.inplanes = f
        self.conv1 = nn.Conv3d(in_channels, f, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(f)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, f, layers[0])
        self.layer2 = self._make_layer(block, 2 * f, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * f, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 8 * f, layers[3], dilation=4)
        head = f // 2
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(8 * f * block.expansion, head, kernel_size=2, stride=2),
            nn.BatchNorm3d(head),
            nn.ReLU(inplace=True),
            nn.Conv3d(head, head, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm3d(head),
            nn.ReLU(inplace=True),
            nn.Conv3d(head, num_classes, kernel_size=1, bias=False),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1,
                    dilation: int = 1) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != out_channels:
            if self.shortcut == "A":
                downsample = _ZeroPadShortcut(out_channels, stride)
            else:
                downsample = nn.Sequential(nn.Conv3d(self.inplanes, out_channels, kernel_size=1, stride=stride,
                                                     bias=False), nn.BatchNorm3d(out_channels))
        layers = [block(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self.inplanes = out_channels
        layers += [block(out_channels, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_quarter(self, x: torch.Tensor) -> torch.Tensor:
        """Med3D's own output: logits at 1/4 of the input size (no input check)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.conv_seg(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("Med3D", x, self.in_channels, self.size_divisor)
        return F.interpolate(self.forward_quarter(x), size=x.shape[2:], mode="trilinear", align_corners=False)
