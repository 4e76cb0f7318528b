"""A name -> network-class registry, so a config can name any architecture (timm style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_NETWORKS: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_network(name: str) -> Callable[[T], T]:
    """Class decorator: make ``build_network(name, ...)`` construct this class."""

    def decorator(cls: T) -> T:
        if name in _NETWORKS and _NETWORKS[name] is not cls:
            raise ValueError(f"network name {name!r} is already registered to {_NETWORKS[name].__name__}")
        _NETWORKS[name] = cls
        return cls

    return decorator


def list_networks() -> list[str]:
    """Registered network names, sorted."""
    return sorted(_NETWORKS)


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the network registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        cls = _NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(list_networks())}") from None
    return cls(**kwargs)
