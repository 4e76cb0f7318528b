"""2D U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) applied slice by slice to a 3D volume.

Faithful: the channel plan 64-128-256-512-1024 (``base_features=64``), two 3x3 convolutions with
ReLU per level, 2x2 max pooling, 2x2 transposed convolutions ("up-convolutions") that halve the
channels, skip connections by concatenation, a 1x1 classifier.

Choices:
- Padded convolutions, so the output keeps the input's in-plane size (the paper's are unpadded
  and crop the skips); the in-plane sizes must therefore be divisible by 16 (four poolings).
- Batch norm after each convolution (bias-free convolutions), as in the codebase's 3D U-Net; the
  paper has none. In training mode its statistics pool all slices of all volumes in the batch.
- Slice-wise use: the slices along ``slice_axis`` (0, 1, 2 = D, H, W; default W) are folded into
  the batch, segmented independently by the same 2D network, and unfolded back to
  (batch, num_classes, D, H, W); the slice axis may have any size. Any number of input channels
  (the channels of a slice are its modalities).
"""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import DoubleConv, unet_pass
from networks.registry import SmokeSettings, register_network

AXES = "DHW"


def check_slice_input(network: str, x: torch.Tensor, in_channels: int, size_divisor: int, slice_axis: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (batch, in_channels, D, H, W) with both in-plane sizes
    (the spatial axes other than ``slice_axis``) divisible by ``size_divisor``."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"{network} expects input of shape (batch, {in_channels}, D, H, W), got {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    plane = [a for a in range(3) if a != slice_axis]
    if any(spatial[a] % size_divisor for a in plane):
        names = ", ".join(AXES[a] for a in plane)
        raise ValueError(f"{network} needs the in-plane sizes ({names}) divisible by {size_divisor}, got {spatial}; "
                         f"slices along {AXES[slice_axis]} may have any size; pad the input or choose another "
                         f"patch size")


class UNet2DCore(nn.Module):
    """The plain 2D U-Net on (batch, in_channels, H, W); five levels, four poolings."""

    depth = 5

    def __init__(self, in_channels: int, num_classes: int, base_features: int) -> None:
        super().__init__()
        f = base_features
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for i in range(self.depth):
            self.encoder.append(DoubleConv(c_in, f * 2**i, f * 2**i, spatial_dims=2))
            c_in = f * 2**i
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(self.depth - 1)):
            skip = f * 2**i
            self.upsamplers.append(nn.ConvTranspose2d(c_in, skip, kernel_size=2, stride=2))
            self.decoder.append(DoubleConv(2 * skip, skip, skip, spatial_dims=2))
            c_in = skip
        self.head = nn.Conv2d(c_in, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(unet_pass(x, self.encoder, self.pool, self.upsamplers, self.decoder))


@register_network("unet2d", smoke=SmokeSettings({"base_features": 4, "slice_axis": 0}, (3, 16, 32), size_divisor=16))
class UNet2D(nn.Module):
    """Ronneberger's 2D U-Net, run on every slice of a (batch, C, D, H, W) volume along
    ``slice_axis`` (0, 1, 2 = D, H, W). Output: (batch, num_classes, D, H, W).

    The two in-plane sizes must be divisible by 16; the slice axis may have any size.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_features: int = 64,
                 slice_axis: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_features < 1:
            raise ValueError(f"UNet2D needs in_channels >= 1, num_classes >= 1 and base_features >= 1 "
                             f"(got {in_channels}, {num_classes}, {base_features})")
        if isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2):
            raise ValueError(f"UNet2D slice_axis must be 0, 1 or 2 (D, H, W), got {slice_axis!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.slice_axis = slice_axis
        self.unet = UNet2DCore(in_channels, num_classes, base_features)

    @property
    def size_divisor(self) -> int:
        """What the in-plane sizes must be divisible by (not the slice axis)."""
        return 2 ** (UNet2DCore.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_slice_input("UNet2D", x, self.in_channels, self.size_divisor, self.slice_axis)
        axis = 2 + self.slice_axis
        slices = x.movedim(axis, 1)  # (B, S, C, P, Q): P, Q the in-plane axes in order
        b, s, c, p, q = slices.shape
        out = self.unet(slices.reshape(b * s, c, p, q))
        return out.reshape(b, s, self.num_classes, p, q).movedim(1, axis)
