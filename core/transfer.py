"""Fine-tuning: a trained checkpoint's network weights as the start of a new model of the same
network, on data that may differ in its modalities and its classes.

Weights are matched by name, never by position: input channels by modality (a model trained on
T1, T1ce, T2, FLAIR starts a FLAIR + T1ce model with those two channels' filters), outputs by
class or region (background, CSF, GM, WM; or WT, TC, ET). A modality the checkpoint lacks starts
from the mean of its channels' filters (as timm adapts a pretrained first convolution to other
channel counts); a class or region it lacks keeps its fresh initialisation. Every other tensor
must match the checkpoint's exactly: the same network with the same options.

Which tensors read the input channels and which write the outputs is found by measurement, for
any network: a training-mode forward pass of a copy with one input channel non-zero (or one
output summed) gives gradient only to the filters of that channel (or output). The result is then
checked: on scans of the modalities both have, the new network's logits for the outputs both have
must be the checkpoint's; a network that reads a modality or writes an output by position
elsewhere (V-Net adds its input to its first maps channel by channel) is refused, as is one with
a pathway per modality. Not covered: a one-output model takes the checkpoint's only output
whatever its name, and an auxiliary branch rebuilding the scans (resnet3d_vae's) is matched by
modality only where the counts differ.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.checkpoint import model_hparams, network_weights
from core.io import DataError
from core.labels import LabelSpace
from networks import build_network
from networks.checks import input_size_problem
from networks.outputs import as_training_output

PROBE_SIZES = (16, 24, 32, 48, 64, 96, 128)  # cubes tried, smallest first, for the measuring passes


@dataclass(frozen=True)
class WeightTransfer:
    """What a fine-tuned model took from its checkpoint."""

    source: str
    tensors: int  # tensors taken whole
    modalities: dict[str, str | None]  # this model's modality -> the checkpoint's (None: its mean)
    outputs: dict[str, str | None]  # this model's class or region -> the checkpoint's (None: fresh)
    their_modalities: list[str] = field(default_factory=list)
    their_outputs: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # checkpoint tensors this network has no place for

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"initialised from {self.source}: {self.tensors} tensors whole"]
        for what, mapping, theirs, missing in (("input channels by modality", self.modalities, self.their_modalities,
                                                "from the mean of its channels"),
                                               ("outputs by name", self.outputs, self.their_outputs,
                                                "freshly initialised")):
            if list(mapping) != list(theirs):
                taken = [name for name, source in mapping.items() if source is not None]
                new = [name for name, source in mapping.items() if source is None]
                parts.append(f"{what} ({', '.join(taken) or 'none'} of {', '.join(theirs)}"
                             f"{f'; {missing}: ' + ', '.join(new) if new else ''})")
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint tensors unused ({', '.join(self.unused[:3])}"
                         f"{', ...' if len(self.unused) > 3 else ''})")
        return "; ".join(parts)


def probe_size(network: nn.Module, in_channels: int, patch_size: Sequence[int]) -> tuple[int, ...]:
    """The smallest cube of :data:`PROBE_SIZES` the network trains on (else the patch)."""
    for size in PROBE_SIZES:
        if input_size_problem(network, in_channels, (size,) * 3, training=True) is None:
            return (size,) * 3
    return tuple(int(s) for s in patch_size)


def _gradients(network: nn.Module, image: torch.Tensor, outputs: Sequence[int] | None) -> dict[str, torch.Tensor]:
    """Each parameter's gradient of the sum of every output (main and deep supervision) channel
    in ``outputs`` (None: all) for ``image``."""
    network.zero_grad(set_to_none=True)
    result = as_training_output(network(image))
    logits = [result.logits, *result.deep_supervision]
    total = sum((t if outputs is None else t[:, list(outputs)]).float().sum() for t in logits)
    total.backward()
    return {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            for name, p in network.named_parameters()}


def _only(gradient: torch.Tensor, dim: int, index: int) -> bool:
    """Whether ``gradient`` is non-zero at ``index`` of ``dim`` and zero everywhere else."""
    moved = gradient.movedim(dim, 0).reshape(gradient.shape[dim], -1).abs().sum(1)
    return bool(moved[index] > 0) and bool((moved.sum() - moved[index]) == 0)


def channel_layers(network: nn.Module, in_channels: int, num_outputs: int, size: Sequence[int],
                   find_inputs: bool = True, find_outputs: bool = True, seed: int = 0
                   ) -> tuple[set[str], set[str], set[str]]:
    """``(input layers, output layers, per-modality tensors)`` of ``network``, by measurement on
    a float32 copy in training mode: the tensors whose dimension 1 holds one filter per input
    channel, those whose dimension 0 holds one row per output, and tensors only one input channel
    reaches (a pathway per modality, which no channel mapping can move)."""
    twin = copy.deepcopy(network).float().cpu().train()
    for parameter in twin.parameters():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((2, in_channels, *size), generator=generator)
    inputs: set[str] | None = None
    reached_by: dict[str, int] = {}
    grads: dict[str, torch.Tensor] = {}
    for channel in range(in_channels if find_inputs and in_channels > 1 else 0):  # one channel: found by shape
        one = torch.zeros_like(image)
        one[:, channel] = image[:, channel]
        grads = _gradients(twin, one, None)
        found = {n for n, g in grads.items() if g.ndim >= 2 and g.shape[1] == in_channels and _only(g, 1, channel)}
        inputs = found if inputs is None else inputs & found
        for name, gradient in grads.items():
            if gradient.abs().sum() > 0:
                reached_by[name] = reached_by.get(name, 0) + 1
    # Weights (not biases or norms, whose gradient may vanish only up to rounding) one channel alone reaches.
    private = {n for n, count in reached_by.items() if count == 1 and grads[n].ndim >= 2} - (inputs or set())
    outputs: set[str] | None = None
    for output in range(num_outputs if find_outputs and num_outputs > 1 else 0):
        grads = _gradients(twin, image, [output])
        found = {n for n, g in grads.items() if g.ndim >= 1 and g.shape[0] == num_outputs and _only(g, 0, output)}
        outputs = found if outputs is None else outputs & found
    return inputs or set(), outputs or set(), private


def _with_aliases(network: nn.Module, keys: set[str]) -> set[str]:
    """``keys`` and every other state-dict key of the same tensors (MONAI's DynUNet registers its
    blocks twice, under ``input_block`` and ``skip_layers``)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in network.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return {alias for group in groups.values() if keys & set(group) for alias in group}


def _with_buffers(state: Mapping[str, torch.Tensor], keys: set[str], rows: int) -> set[str]:
    """``keys`` and the tensors of their modules with ``rows`` rows that gradients do not reach: a
    batch norm's running statistics beside its weight (HighResNet's last block)."""
    modules = {key.rpartition(".")[0] for key in keys}
    return keys | {key for key, tensor in state.items()
                   if key.rpartition(".")[0] in modules and tensor.ndim >= 1 and tensor.shape[0] == rows}


def _by_name(wanted: Sequence[str], available: Sequence[str]) -> dict[str, str | None]:
    return {name: (name if name in available else None) for name in wanted}


def transfer_weights(network: nn.Module, checkpoint: Mapping[str, Any], modalities: Sequence[str],
                     labels: LabelSpace, patch_size: Sequence[int], source: str, network_name: str | None = None
                     ) -> WeightTransfer:
    """Load ``checkpoint``'s network weights (a checkpoint read by
    :func:`core.checkpoint.read_checkpoint`) into ``network`` (registered as ``network_name``),
    built for ``modalities`` and ``labels``: input channels matched by modality, outputs by class
    or region name (see the module's docstring). Raises :class:`DataError`, naming ``source``,
    when the networks differ; ``network`` is then left as it was."""
    hparams = model_hparams(checkpoint)
    if network_name is not None and hparams.get("network") != network_name:
        raise DataError(f"{source}: holds a {hparams.get('network')} network, this model is {network_name}: "
                        f"fine-tuning needs the same network (--model.network {hparams.get('network')}, with its "
                        f"options {hparams.get('network_kwargs') or {}})")
    their_modalities = [str(m) for m in hparams.get("modalities") or []]
    their_outputs = LabelSpace.from_dict(hparams["label_space"]).output_names
    modalities, ours = [str(m) for m in modalities], labels.output_names
    if not modalities:
        raise DataError(f"{source}: this model names no modalities to match the checkpoint's {their_modalities} "
                        "(give the model its modalities)")
    weights = network_weights(checkpoint)
    state = network.state_dict()
    remap_inputs, remap_outputs = modalities != their_modalities, ours != their_outputs
    inputs = outputs = private = set()
    size = probe_size(network, len(modalities), patch_size) if remap_inputs or remap_outputs else None
    if remap_inputs or remap_outputs:
        if remap_inputs and not their_modalities:
            raise DataError(f"{source}: records no modalities, so its input channels cannot be matched to "
                            f"{modalities}")
        inputs, outputs, private = (_with_aliases(network, keys) for keys in channel_layers(
            network, len(modalities), len(ours), size, remap_inputs, remap_outputs))
        outputs = _with_buffers(state, outputs, len(ours))
        if remap_inputs and private:
            raise DataError(f"{source}: {hparams.get('network')} keeps a pathway per modality "
                            f"({sorted(private)[0]}, ...), which cannot be matched by name; fine-tune it on the "
                            f"checkpoint's modalities {their_modalities}, in that order")
    input_map = _by_name(modalities, their_modalities) if remap_inputs else {m: m for m in modalities}
    output_map = _by_name(ours, their_outputs) if remap_outputs else {o: o for o in ours}
    loaded, whole, problems = {}, 0, []
    for key, target in state.items():
        theirs = weights.get(key)
        is_input = remap_inputs and (key in inputs or _differs_only(theirs, target, 1, len(their_modalities),
                                                                    len(modalities)))
        is_output = remap_outputs and (key in outputs or _differs_only(theirs, target, 0, len(their_outputs),
                                                                       len(ours)))
        if theirs is None:
            if not is_output:  # a new output head starts fresh
                problems.append(f"{key} is not in it")
            continue
        # An auxiliary branch that rebuilds the scans (resnet3d_vae's) has a row per modality.
        rebuilds = remap_inputs and not is_output and _differs_only(theirs, target, 0, len(their_modalities),
                                                                    len(modalities))
        modality_dim = 1 if is_input else 0 if rebuilds else None
        value = (_remap(theirs, target, modality_dim, input_map, their_modalities, 0 if is_output else None,
                        output_map, their_outputs) if modality_dim is not None or is_output
                 else theirs.to(target.dtype) if theirs.shape == target.shape else None)
        if value is None:
            problems.append(f"{key} has shape {tuple(theirs.shape)} there, {tuple(target.shape)} here")
            continue
        loaded[key] = value
        whole += modality_dim is None and not is_output
    if problems:
        hint = (f"; and where this network reads the scans beside other maps, only the checkpoint's modalities "
                f"{their_modalities} fit" if remap_inputs else "")
        raise DataError(f"{source}: its network ({hparams.get('network')}, {hparams.get('network_kwargs') or {}}) "
                        f"is not this one: {'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''} "
                        f"({len(problems)} tensors); fine-tuning needs the same network with the same options{hint}")
    fresh = {k: v.clone() for k, v in state.items()} if size is not None else None  # to roll back a refusal
    network.load_state_dict({**state, **loaded})
    if fresh is not None and not _computes_the_same(network, hparams, weights, input_map, their_modalities,
                                                    output_map, their_outputs, size):
        network.load_state_dict(fresh)
        raise DataError(f"{source}: {hparams.get('network')} reads its modalities or writes its outputs in layers "
                        f"that cannot be matched by name (checked: the matched channels did not give the "
                        f"checkpoint's outputs); fine-tune it on the checkpoint's modalities {their_modalities} "
                        f"and outputs {their_outputs}, in that order")
    return WeightTransfer(source, whole, input_map, output_map, their_modalities, their_outputs,
                          sorted(set(weights) - set(state)))


def _computes_the_same(network: nn.Module, hparams: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
                       input_map: Mapping[str, str | None], their_modalities: Sequence[str],
                       output_map: Mapping[str, str | None], their_outputs: Sequence[str], size: Sequence[int],
                       seed: int = 0) -> bool:
    """Whether ``network``, after the transfer, gives the checkpoint's network's outputs for the
    outputs both have, on scans of the modalities both have (the others left zero), in eval mode:
    the check that no layer read a modality or wrote an output by position unnoticed. True
    where there is nothing to compare."""
    shared_inputs = {m: s for m, s in input_map.items() if s is not None}
    shared_outputs = {o: s for o, s in output_map.items() if s is not None}
    if not shared_inputs or not shared_outputs:
        return True
    theirs = build_network(str(hparams["network"]), in_channels=len(their_modalities), num_classes=len(their_outputs),
                           **(hparams.get("network_kwargs") or {}))
    theirs.load_state_dict(weights)
    ours = copy.deepcopy(network).float().cpu().eval()
    theirs = theirs.float().eval()
    generator = torch.Generator().manual_seed(seed)
    scans = {m: torch.randn((1, *size), generator=generator) for m in shared_inputs}
    their_image = torch.zeros((1, len(their_modalities), *size))
    our_image = torch.zeros((1, len(input_map), *size))
    for index, modality in enumerate(input_map):
        if modality in shared_inputs:
            our_image[:, index] = scans[modality]
            their_image[:, their_modalities.index(shared_inputs[modality])] = scans[modality]
    with torch.no_grad():
        our_logits, their_logits = ours(our_image), theirs(their_image)
    outputs = list(output_map)
    for name, their_name in shared_outputs.items():
        expected = their_logits[:, their_outputs.index(their_name)]
        scale = float(expected.abs().max()) or 1.0
        if not torch.allclose(our_logits[:, outputs.index(name)], expected, rtol=1e-3, atol=1e-4 * scale):
            return False
    return True


def _differs_only(theirs: torch.Tensor | None, target: torch.Tensor, dim: int, their_count: int, count: int) -> bool:
    """Whether ``theirs`` and ``target`` differ in dimension ``dim`` alone, as ``their_count``
    against ``count`` channels (how a layer of a one-channel model is found)."""
    if theirs is None or theirs.ndim != target.ndim or theirs.ndim <= dim or their_count == count:
        return False
    return (theirs.shape[dim], target.shape[dim]) == (their_count, count) and all(
        a == b for d, (a, b) in enumerate(zip(theirs.shape, target.shape, strict=True)) if d != dim)


def _pick(value: torch.Tensor, dim: int, mapping: Mapping[str, str | None], their_names: Sequence[str],
          fresh: torch.Tensor | None) -> torch.Tensor:
    """``value``'s slices along ``dim`` chosen by name: ``mapping``'s names in order, each the
    checkpoint's slice of that name; one it lacks takes ``fresh``'s slice (outputs), or else the
    mean of the checkpoint's slices (modalities)."""
    mean = value.mean(dim=dim)
    slices = [value.select(dim, their_names.index(s)) if s is not None
              else fresh.select(dim, j) if fresh is not None else mean for j, s in enumerate(mapping.values())]
    return torch.stack(slices, dim=dim)


def _remap(theirs: torch.Tensor, target: torch.Tensor, modality_dim: int | None,
           modalities: Mapping[str, str | None], their_modalities: Sequence[str], output_dim: int | None,
           outputs: Mapping[str, str | None], their_outputs: Sequence[str]) -> torch.Tensor | None:
    """``theirs`` with its ``modality_dim`` chosen by modality (a new one: the mean of the
    checkpoint's) and its ``output_dim`` by output (a new one: ``target``'s fresh slice); None
    where the other dimensions differ."""
    value = theirs.to(device=target.device, dtype=target.dtype)
    if modality_dim is not None:
        value = _pick(value, modality_dim, modalities, their_modalities, None)
    if output_dim is not None:
        if value.shape[:output_dim] + value.shape[output_dim + 1:] != target.shape[:output_dim] + target.shape[
                output_dim + 1:]:
            return None
        value = _pick(value, output_dim, outputs, their_outputs, target)
    return value if value.shape == target.shape else None
