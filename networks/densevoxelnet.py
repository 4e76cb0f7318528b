"""DenseVoxelNet: DenseVoxNet of Yu et al., "Automatic 3D cardiovascular MR segmentation with
densely-connected volumetric convnets" (MICCAI 2017).

Faithful to the paper: a 3x3x3 stride-2 convolution to 16 maps; dense block 1 (12 layers of
BN-ReLU-Conv3x3x3-Dropout(0.2), growth rate 12, 16 -> 160 maps); a transition of BN-ReLU-Conv1x1x1
and 2x2x2 max pooling; dense block 2 (12 layers, 160 -> 304 maps); BN-ReLU-Conv1x1x1; two 2x2x2
stride-2 deconvolutions back to the input resolution and a 1x1x1 classifier. The auxiliary side
path (dense block 1's output upsampled by a 2x2x2 stride-2 deconvolution, with its own 1x1x1
classifier) is the paper's deep supervision: in training mode it is returned as
``TrainingOutput.deep_supervision``, at the main output's resolution; in eval mode it is skipped.
About 1.78 M parameters at the defaults (1 input channel, 4 classes); the paper says about 1.8 M.

Choices, where the paper does not pin things down:
- the deconvolutions give 128 and 64 maps (``deconv_channels``), the side path 64, and each
  deconvolution is followed by BN-ReLU so the two are not one linear map; the side path starts
  with BN-ReLU, as every convolution in the dense part is pre-activated;
- the 1x1x1 convolutions of the transition and after dense block 2 keep the channel count (the
  paper compresses nothing); dropout is element-wise (``nn.Dropout``), as in DenseNet;
- convolutions are padded, so the output has the input's size; every spatial size must be
  divisible by 4 (the stride-2 convolution and the max pooling).
"""

from __future__ import annotations

import torch
from torch import nn

from networks.checks import check_input
from networks.outputs import TrainingOutput
from networks.registry import SmokeSettings, register_network


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.ReLU(inplace=True)]


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3x3-Dropout producing ``growth_rate`` maps, concatenated to its input."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*_bn_relu(in_channels),
                                   nn.Conv3d(in_channels, growth_rate, kernel_size=3, padding=1, bias=False),
                                   nn.Dropout(dropout) if dropout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], dim=1)


class _DenseBlock(nn.Sequential):
    """``num_layers`` densely connected layers: ``in_channels + num_layers * growth_rate`` maps out."""

    def __init__(self, in_channels: int, num_layers: int, growth_rate: int, dropout: float) -> None:
        super().__init__(*[_DenseLayer(in_channels + i * growth_rate, growth_rate, dropout) for i in range(num_layers)])
        self.out_channels = in_channels + num_layers * growth_rate


def _deconv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2), *_bn_relu(out_channels)]


@register_network("densevoxelnet", smoke=SmokeSettings(
    {"init_features": 8, "growth_rate": 8, "layers_per_block": 2, "deconv_channels": (16, 8), "dropout": 0.0},
    input_size=(8, 16, 24), size_divisor=4), channels_last=True)
class DenseVoxelNet(nn.Module):
    """DenseVoxNet (Yu et al. 2017): two dense blocks at 1/2 and 1/4 resolution, two stride-2
    deconvolutions back up, and an auxiliary side path from dense block 1 (deep supervision).

    Args:
        in_channels: input modalities (any number >= 1).
        num_classes: output classes (>= 2).
        init_features: maps of the first (3x3x3, stride-2) convolution; 16 in the paper.
        growth_rate: maps each dense layer adds; 12 in the paper.
        layers_per_block: layers in each of the two dense blocks; 12 in the paper.
        dropout: dropout rate after each dense layer's convolution; 0.2 in the paper.
        deconv_channels: maps of the main path's two deconvolutions; the side path's deconvolution
            gives as many as the last one.

    Training mode returns ``TrainingOutput(logits, deep_supervision=[auxiliary_logits])``, both
    at the input's size; eval mode returns the main logits only.
    """

    size_divisor = 4

    def __init__(self, in_channels: int = 1, num_classes: int = 2, init_features: int = 16, growth_rate: int = 12,
                 layers_per_block: int = 12, dropout: float = 0.2,
                 deconv_channels: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"DenseVoxelNet needs in_channels >= 1 and num_classes >= 1 "
                             f"(got {in_channels}, {num_classes})")
        if init_features < 1 or growth_rate < 1 or layers_per_block < 1:
            raise ValueError(f"DenseVoxelNet needs init_features, growth_rate and layers_per_block >= 1 "
                             f"(got {init_features}, {growth_rate}, {layers_per_block})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DenseVoxelNet needs 0 <= dropout < 1 (got {dropout})")
        if len(deconv_channels) != 2 or min(deconv_channels) < 1:
            raise ValueError(f"DenseVoxelNet needs deconv_channels as two positive ints (got {deconv_channels})")
        self.in_channels = in_channels
        self.num_classes = num_classes
        up1, up2 = deconv_channels

        self.stem = nn.Conv3d(in_channels, init_features, kernel_size=3, stride=2, padding=1, bias=False)
        self.block1 = _DenseBlock(init_features, layers_per_block, growth_rate, dropout)
        c1 = self.block1.out_channels
        self.transition = nn.Sequential(*_bn_relu(c1), nn.Conv3d(c1, c1, kernel_size=1, bias=False),
                                        nn.MaxPool3d(kernel_size=2, stride=2))
        self.block2 = _DenseBlock(c1, layers_per_block, growth_rate, dropout)
        c2 = self.block2.out_channels
        self.upsample = nn.Sequential(*_bn_relu(c2), nn.Conv3d(c2, c2, kernel_size=1, bias=False),
                                      *_deconv_bn_relu(c2, up1), *_deconv_bn_relu(up1, up2))
        self.head = nn.Conv3d(up2, num_classes, kernel_size=1)
        # Auxiliary side path: dense block 1's output (1/2 resolution) up to full size, own classifier.
        self.side_upsample = nn.Sequential(*_bn_relu(c1), *_deconv_bn_relu(c1, up2))
        self.side_head = nn.Conv3d(up2, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutput:
        check_input("DenseVoxelNet", x, self.in_channels, self.size_divisor)
        features1 = self.block1(self.stem(x))
        logits = self.head(self.upsample(self.block2(self.transition(features1))))
        if not self.training:
            return logits
        auxiliary = self.side_head(self.side_upsample(features1))
        return TrainingOutput(logits=logits, deep_supervision=[auxiliary])
