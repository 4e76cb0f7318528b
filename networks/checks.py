"""Input checks shared by the networks, so a bad input fails with a message, not deep in torch."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


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


def input_size_problem(network: nn.Module, in_channels: int, size: Sequence[int], training: bool = False
                       ) -> str | None:
    """Why ``network`` refuses inputs of spatial ``size`` in training (``training``) or inference
    mode (its own input check, the first thing its forward does), or None. Nearly free and without
    side effects: a copy of the network on the meta device takes a meta batch, so shapes flow and
    no voxel is computed."""
    twin = copy.deepcopy(network).to("meta").train(training)
    probe = torch.empty((2, in_channels, *[int(s) for s in size]), device="meta")  # 2: batch norm's least
    try:
        twin(probe)
    except ValueError as error:  # the network's own check (check_input), or a shape it cannot take
        return str(error)
    except Exception:  # an operation the meta device lacks: past the check, so the size is taken
        return None
    return None
