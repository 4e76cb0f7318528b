"""Plain ``torch.nn.Module`` segmentation networks, one file per family, named by a registry.

Every module of this package is imported here, which registers its networks: adding a family is
adding its file (and a preset YAML under ``configs/models/``).
"""

import importlib
import pkgutil

from networks.registry import (
    SmokeSettings,
    build_network,
    channels_last_default,
    check_network_options,
    describe_options,
    list_networks,
    network_class,
    network_options,
    register_network,
    smoke_settings,
)

_HELPERS = {"registry", "blocks", "checks", "outputs", "__main__"}  # shared code, no networks
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "SmokeSettings",
    "build_network",
    "channels_last_default",
    "check_network_options",
    "describe_options",
    "list_networks",
    "network_class",
    "network_options",
    "register_network",
    "smoke_settings",
]
