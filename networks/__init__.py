"""Plain ``torch.nn.Module`` segmentation networks, one file per family, named by a registry."""

from networks import (  # noqa: F401  (importing a family registers its networks)
    densenet3d,
    densevoxelnet,
    med3d,
    monai_nets,
    skipdensenet3d,
    unet2d,
    unet3d,
    vnet,
)
from networks.registry import build_network, list_networks, register_network

__all__ = ["build_network", "list_networks", "register_network"]
