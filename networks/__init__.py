"""Plain ``torch.nn.Module`` segmentation networks, one file per family, named by a registry."""

from networks import unet3d  # noqa: F401  (registers "unet3d")
from networks.registry import build_network, list_networks, register_network

__all__ = ["build_network", "list_networks", "register_network"]
