"""The field's modern anchors from MONAI, behind the registry's (in_channels, num_classes)
interface and the same clear input checks as our own networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks import nets

from networks.checks import check_input
from networks.outputs import TrainingOutput
from networks.registry import SmokeSettings, register_network


@register_network("segresnet", smoke=SmokeSettings({"init_filters": 8}, (8, 16, 24), size_divisor=8))
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


@register_network("highresnet", smoke=SmokeSettings({"base_features": 4}, (8, 12, 16)))
class HighResNet(nets.HighResNet):
    """HighResNet (Li et al., IPMI 2017) as MONAI builds it: 20 padded layers, residual blocks
    of 16, 32 and 64 maps with dilations 1, 2 and 4; full resolution throughout, any size.
    ``base_features`` scales every layer's width (16: the paper's, MONAI's default layers)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout_prob: float = 0.0,
                 base_features: int = 16) -> None:
        if base_features < 1:
            raise ValueError(f"HighResNet needs base_features >= 1, got {base_features}")
        # MONAI's layer table with every width scaled: 16, 16, 32, 64, 80 maps at base 16.
        scale = {"conv_0": 1, "res_1": 1, "res_2": 2, "res_3": 4, "conv_1": 5}
        layers = tuple({**layer, "n_features": scale[layer["name"]] * base_features} if layer["name"] in scale
                       else dict(layer) for layer in nets.highresnet.DEFAULT_LAYER_PARAMS_3D)
        super().__init__(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                         dropout_prob=dropout_prob, layer_params=layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("HighResNet", x, self.in_channels, size_divisor=1)
        return super().forward(x)


@register_network("resnet3d_vae", smoke=SmokeSettings(
    {"init_filters": 8, "input_image_size": (16, 16, 32)}, input_size=(16, 16, 32), size_divisor=8,
    patch_size=(16, 16, 32)))  # the VAE branch is built for one input size: the patch
class ResNet3DVAE(nets.SegResNetVAE):
    """Myronenko's ResNet3D-VAE (BraTS 2018): SegResNet plus a VAE branch that reconstructs the
    input from the bottleneck. In training it returns the segmentation and the VAE loss
    (L2 reconstruction + KL of the estimated mean and std), weighted by ``vae_weight`` (0.1 in
    the paper); ``init_filters`` 32 as in the paper. The branch needs
    training patches of exactly ``input_image_size``. Inference takes any size divisible by 8."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 input_image_size: tuple[int, int, int] = (128, 128, 128), init_filters: int = 32,
                 vae_weight: float = 0.1, dropout_prob: float | None = None) -> None:
        if len(input_image_size) != 3 or any(s % 16 for s in input_image_size):
            raise ValueError(f"ResNet3DVAE's VAE branch halves the input four times: input_image_size must be three "
                             f"sizes divisible by 16, got {tuple(input_image_size)}")
        super().__init__(input_image_size=tuple(input_image_size), vae_estimate_std=True, spatial_dims=3,
                         init_filters=init_filters, in_channels=in_channels, out_channels=num_classes,
                         dropout_prob=dropout_prob)
        self.in_channels = in_channels
        self.input_image_size = tuple(input_image_size)
        self.vae_weight = vae_weight
        self.size_divisor = 2 ** (len(self.blocks_down) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutput:  # type: ignore[override]
        check_input("ResNet3DVAE", x, self.in_channels, self.size_divisor)
        if self.training and tuple(x.shape[2:]) != self.input_image_size:
            raise ValueError(f"ResNet3DVAE's VAE branch was built for training patches of {self.input_image_size}, "
                             f"got {tuple(x.shape[2:])}; set network_kwargs.input_image_size to the patch size")
        logits, vae_loss = super().forward(x)
        if not self.training:
            return logits
        return TrainingOutput(logits, regularisers={"vae": self.vae_weight * vae_loss})


@register_network("dynunet", smoke=SmokeSettings(
    {"filters": [4, 8, 16, 32, 64]}, input_size=(16, 16, 32), size_divisor=16, patch_size=(16, 16, 32)))
class DynUNet(nets.DynUNet):
    """MONAI's DynUNet, the nnU-Net architecture: ``levels`` resolution levels of two 3x3x3
    convolutions with instance norm and leaky ReLU, strided-convolution downsampling, maps
    doubling from 32 up to 320. With ``deep_supervision`` the ``deep_supr_num`` heads below the
    top are trained as well (weights 1/2, 1/4, ...) against targets downsampled to their size,
    as nnU-Net does."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, levels: int = 5,
                 deep_supervision: bool = True, deep_supr_num: int = 2, res_block: bool = False,
                 filters: list[int] | None = None, dropout: float | None = None) -> None:
        if levels < 2 or (deep_supervision and not 1 <= deep_supr_num <= levels - 2):
            raise ValueError(f"DynUNet needs levels >= 2 and 1 <= deep_supr_num <= levels - 2 "
                             f"(got levels={levels}, deep_supr_num={deep_supr_num})")
        strides = [1] + [2] * (levels - 1)
        super().__init__(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                         kernel_size=[3] * levels, strides=strides, upsample_kernel_size=strides[1:],
                         filters=filters, dropout=dropout, deep_supervision=deep_supervision,
                         deep_supr_num=deep_supr_num, res_block=res_block)
        self.in_channels = in_channels
        self.size_divisor = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutput:
        check_input("DynUNet", x, self.in_channels, self.size_divisor)
        if self.training and all(s == self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"DynUNet's deepest level would be one voxel, which instance norm cannot normalise in "
                             f"training; use patches larger than {self.size_divisor} on at least one side")
        if self.training and self.deep_supervision:
            # The heads at their own resolution (1/2, 1/4, ... of the patch), the targets resized to
            # them in the loss, as nnU-Net does; MONAI upsamples every head to full size first, a
            # full-size tensor per head in the forward and backward passes for nothing.
            main = self.output_block(self.skip_layers(x))
            return TrainingOutput(main, deep_supervision=list(self.heads))
        return super().forward(x)


@register_network("swinunetr", smoke=SmokeSettings(
    {"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4}, input_size=(64, 32, 32), size_divisor=32,
    batch_size=1, patch_size=(64, 32, 32)))
class SwinUNETR(nets.SwinUNETR):
    """SwinUNETR (Hatamizadeh et al. 2022) from MONAI: a Swin transformer encoder (window 7,
    depths 2-2-2-2) with a convolutional decoder; ``feature_size`` 48 as in the paper (62 M);
    sides divisible by 32, at least one of them 64 or more."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, feature_size: int = 48,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, dropout_path_rate: float = 0.0, use_checkpoint: bool = False) -> None:
        if feature_size % 12:
            raise ValueError(f"SwinUNETR needs feature_size divisible by 12, got {feature_size}")
        super().__init__(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size,
                         depths=tuple(depths), num_heads=tuple(num_heads), window_size=window_size,
                         dropout_path_rate=dropout_path_rate, use_checkpoint=use_checkpoint, spatial_dims=3)
        self.in_channels = in_channels
        self.size_divisor = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SwinUNETR", x, self.in_channels, self.size_divisor, min_size=self.size_divisor)
        # The deepest features are size/32 and instance-normalised: one voxel there normalises to
        # a constant (an error in training, lost information at inference).
        if math.prod(s // self.size_divisor for s in x.shape[2:]) < 2:
            raise ValueError(f"SwinUNETR's deepest features are 1/{self.size_divisor} of the input, one voxel for "
                             f"{tuple(x.shape[2:])}, which instance norm cannot normalise; make at least one side "
                             f"{2 * self.size_divisor} or more")
        return super().forward(x)
