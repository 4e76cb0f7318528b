"""A name -> network-class registry, so a config can name any architecture (timm style).

Each network registers with its :class:`SmokeSettings` (small arguments, an input it takes, its
input limits): the tests of every network (shapes, gradients, overfitting, the CLI) read them,
so adding a network is its file and its preset YAML, with no edit to any test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

_NETWORKS: dict[str, type[nn.Module]] = {}
_SMOKE: dict[str, SmokeSettings] = {}
_CHANNELS_LAST: dict[str, bool] = {}  # each network's default weight layout (build_network)

T = TypeVar("T", bound=type[nn.Module])


@dataclass(frozen=True)
class SmokeSettings:
    """What a network needs for a fast test.

    Attributes:
        kwargs: small constructor arguments (a few channels) so that a step takes milliseconds.
        input_size: a spatial input size the network takes with those arguments.
        min_in_channels: fewest input channels (multi-stream networks want one stream per modality).
        size_divisor: spatial sides must be multiples of this (1: any size).
        batch_size: samples per test batch (1 for the heaviest).
        patch_size: training patch for the end-to-end CLI test on the tiny demo volumes.
    """

    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (16, 16, 16)
    min_in_channels: int = 1
    size_divisor: int = 1
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (16, 16, 16)


def register_network(name: str, smoke: SmokeSettings | None = None, channels_last: bool = False
                     ) -> Callable[[T], T]:
    """Class decorator: make ``build_network(name, ...)`` construct this class; ``smoke``:
    its test settings (every network of this package declares them); ``channels_last``: its
    weights' default memory layout (see :func:`build_network`), true where measured faster."""

    def decorator(cls: T) -> T:
        if name in _NETWORKS and _NETWORKS[name] is not cls:
            raise ValueError(f"network name {name!r} is already registered to {_NETWORKS[name].__name__}")
        _NETWORKS[name] = cls
        _CHANNELS_LAST[name] = channels_last
        if smoke is not None:
            _SMOKE[name] = smoke
        return cls

    return decorator


def smoke_settings(name: str) -> SmokeSettings | None:
    """The test settings ``name`` was registered with (None if it declared none)."""
    return _SMOKE.get(name)


def list_networks() -> list[str]:
    """Registered network names, sorted."""
    return sorted(_NETWORKS)


def network_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``."""
    try:
        return _NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(list_networks())}") from None


def network_options(name: str) -> dict[str, inspect.Parameter]:
    """The options of network ``name`` (its constructor's parameters, typed, with defaults),
    ``in_channels`` and ``num_classes`` included (those come from the data)."""
    parameters = inspect.signature(network_class(name).__init__).parameters
    return {k: p for k, p in parameters.items() if k != "self" and p.kind is not p.VAR_KEYWORD}


def describe_options(name: str) -> str:
    """One line per option of ``name``: ``name: type = default``, as ``python -m networks`` lists them."""
    lines = []
    for option, parameter in network_options(name).items():
        if option in ("in_channels", "num_classes"):
            continue
        annotation = parameter.annotation if isinstance(parameter.annotation, str) else getattr(
            parameter.annotation, "__name__", str(parameter.annotation))
        default = "" if parameter.default is parameter.empty else f" = {parameter.default!r}"
        lines.append(f"{option}: {annotation}{default}")
    return "\n".join(lines)


def check_network_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for an unknown network, or an option it does not have (listing those it has)."""
    cls = network_class(name)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    unknown = [] if takes_any else sorted(set(options) - set(network_options(name)))
    if unknown:
        listing = describe_options(name).replace("\n", "; ") or "none"
        raise ValueError(f"network {name!r} has no option {', '.join(map(repr, unknown))}; its options: {listing}")


def channels_last_default(name: str) -> bool:
    """Whether ``build_network(name)`` lays the 3D weights out ``channels_last_3d`` by default."""
    network_class(name)  # an unknown name is the registry's error
    return _CHANNELS_LAST[name]


def build_network(name: str, channels_last: bool | None = None, **kwargs: Any) -> nn.Module:
    """Instantiate the network registered as ``name`` with keyword arguments ``kwargs``; an
    option the network does not have is an error that lists the ones it has.

    ``channels_last``: 3D convolution weights in the ``channels_last_3d`` memory layout, in which
    oneDNN (CPU) and cuDNN run many 3D convolutions faster, inputs and outputs unchanged (the
    demo's U-Net on a 2-core AVX2 CPU: training step 1.2x, sliding-window inference 1.3x;
    ``benchmarks/train_step.py``). Weights and checkpoints hold the same values either way.
    None: the network's registered default: true where measured faster and never slower
    (``unet3d``: 1.7x on an H200 in bf16, 1.14x here; ``vnet``, ``vnet_light`` 1.33-1.36x,
    ``densevoxelnet`` 1.23x, ``attention_unet`` 1.15x on this 2-core CPU, fp32 training steps at
    48³); false where it was slower (``segresnet``: 0.88x on the H200), neutral (``dynunet``
    0.98x here) or not measured; a network that reshapes activations with ``view``, as
    SegResNetVAE does, cannot take it. ``networks.channels_last_default(name)`` says which."""
    check_network_options(name, kwargs)
    network = network_class(name)(**kwargs)
    if _CHANNELS_LAST[name] if channels_last is None else channels_last:
        for parameter in network.parameters():
            if parameter.dim() == 5:
                parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)
    return network
