"""3D U-Net (Cicek et al., MICCAI 2016), as chapter 3.7 of the thesis describes it."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import DoubleConv, unet_pass
from networks.checks import check_input
from networks.outputs import TrainingOutput
from networks.registry import SmokeSettings, register_network


@register_network("unet3d", smoke=SmokeSettings({"base_features": 4}, (16, 24, 32), size_divisor=8), channels_last=True)
class UNet3D(nn.Module):
    """Four resolution steps; channels double before each 2x2x2 max pooling (32->64 on the
    first step with ``base_features=32``, as in the paper), 2x2x2 transposed convolutions
    that keep the channel count, skip connections by concatenation, a final 1x1x1 convolution.

    Convolutions are padded, so the output has the input's spatial size; every spatial size
    must be divisible by 8 (three poolings).

    ``deep_supervision``: 1x1x1 heads on that many decoder levels below the top (1/2, then 1/4
    of the patch), trained against the target resized to them (weights 1/2, 1/4), as nnU-Net
    does; evaluation and old checkpoints are unchanged (0, the default, adds nothing).
    """

    depth = 4

    def __init__(self, in_channels: int = 2, num_classes: int = 4, base_features: int = 32,
                 deep_supervision: int = 0) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_features < 1:
            raise ValueError(
                f"UNet3D needs in_channels >= 1, num_classes >= 1 and base_features >= 1 "
                f"(got {in_channels}, {num_classes}, {base_features})"
            )
        if not 0 <= deep_supervision <= self.depth - 2:
            raise ValueError(f"UNet3D has {self.depth - 2} decoder levels below the top for deep supervision, "
                             f"got deep_supervision={deep_supervision}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        f = base_features
        # Analysis path: level i takes c_in, outputs 2 * f * 2**i after doubling.
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for i in range(self.depth):
            mid = f * 2**i
            self.encoder.append(DoubleConv(c_in, mid, 2 * mid))
            c_in = 2 * mid
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        # Synthesis path: upsample keeps channels, concat with the skip, then two convolutions.
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(self.depth - 1)):
            skip = 2 * f * 2**i
            self.upsamplers.append(nn.ConvTranspose3d(c_in, c_in, kernel_size=2, stride=2))
            self.decoder.append(DoubleConv(c_in + skip, skip, skip))
            c_in = skip
        self.head = nn.Conv3d(c_in, num_classes, kernel_size=1)
        # Decoder level j (deepest first) outputs 2 * f * 2**(depth - 2 - j) maps; heads from the
        # level below the top downwards.
        below_top = [2 * f * 2**i for i in range(1, self.depth - 1)]
        self.deep_supervision_heads = nn.ModuleList(
            nn.Conv3d(c, num_classes, kernel_size=1) for c in below_top[:deep_supervision])

    @property
    def size_divisor(self) -> int:
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutput:
        check_input("UNet3D", x, self.in_channels, self.size_divisor)
        supervised = self.training and len(self.deep_supervision_heads) > 0
        levels: list[torch.Tensor] | None = [] if supervised else None
        logits = self.head(unet_pass(x, self.encoder, self.pool, self.upsamplers, self.decoder, levels))
        if not supervised:
            return logits
        # levels[-1] is the top; levels[-2] the level below it (1/2), levels[-3] (1/4).
        heads = [head(levels[-2 - i]) for i, head in enumerate(self.deep_supervision_heads)]
        return TrainingOutput(logits, deep_supervision=heads)
