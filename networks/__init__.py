"""Plain ``torch.nn.Module`` segmentation networks, one file per family, named by a registry."""

from networks import monai_nets, unet3d, vnet  # noqa: F401  (importing a family registers its networks)
from networks.registry import build_network, list_networks, register_network

__all__ = ["build_network", "list_networks", "register_network"]
