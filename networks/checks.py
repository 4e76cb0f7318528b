"""Input checks shared by the networks, so a bad input fails with a message, not deep in torch."""

from __future__ import annotations

import torch


def check_input(network: str, x: torch.Tensor, in_channels: int, size_divisor: int = 1, min_size: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is (batch, in_channels, D, H, W) with every spatial
    size divisible by ``size_divisor`` and at least ``min_size``."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"{network} expects input of shape (batch, {in_channels}, D, H, W), got {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if any(s % size_divisor for s in spatial):
        raise ValueError(f"{network} needs every spatial size divisible by {size_divisor}, got {spatial}; "
                         f"pad the input or choose another patch size")
    if any(s < min_size for s in spatial):
        raise ValueError(f"{network} needs every spatial size to be at least {min_size}, got {spatial}; "
                         f"choose a larger patch size")
