"""Planning a training run from the data: nnU-Net's dataset fingerprint and the rules that turn
it into a target spacing, a patch and batch size that fit a GPU, and a network's depth and widths.

The rules follow nnU-Net v2's experiment planner (Isensee et al. 2021), with two differences
that come from this codebase:

- Memory is estimated in bytes, not in nnU-Net's reference units: one training-mode forward
  pass of the network on PyTorch's ``meta`` device (shapes only: instant, no memory) counts the
  tensors autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``),
  at two probe sizes, giving elements per voxel; that is scaled to the patch and batch at the
  precision's bytes per element, plus what the backward pass holds at once, parameters,
  gradients and optimiser state, and a fixed CUDA overhead. (Counting every leaf module's output
  instead, as before, doubled the estimate: 10.63 GB against 5.30 GB measured for DynUNet 128^3
  x 2 in bf16 on an H200.) ``benchmarks/memory_plan.py`` checks the count against the bytes
  autograd really saves on a CPU; ``benchmarks/gpu_fast_path.py`` against the peak on a GPU.
- DynUNet here downsamples all three axes at every level (isotropic strides), so the number of
  levels follows the patch's *shortest* side; nnU-Net can stop pooling one axis early.

Plain NumPy/PyTorch: ``plan.py`` reads a dataset through its DataModule and calls these.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.geometry import voxel_spacing
from core.io import load_volume
from core.labels import LabelSpace
from core.volumes import Subject, nonzero_box
from networks import build_network

ANISOTROPY_RATIO = 3.0  # nnU-Net: an axis this much coarser than the others is "anisotropic"
INITIAL_PATCH_VOXELS = 256 ** 3  # nnU-Net's starting patch volume, shrunk until it fits
MIN_BOTTLENECK = 4  # voxels per side at the deepest level (nnU-Net's minimal feature map edge)
MAX_LEVELS = 6  # resolution levels at most (nnU-Net 3d_fullres: 6 stages)
BASE_FEATURES, MAX_FEATURES = 32, 320  # nnU-Net's widths: 32 doubling per level, capped
MAX_DATASET_COVERED = 0.05  # a batch may hold at most 5 % of the dataset's voxels (nnU-Net)
MIN_BATCH = 2
SAMPLE_PER_SUBJECT = 10_000  # foreground intensities drawn per subject and modality (nnU-Net)
CUDA_OVERHEAD_GB = 1.0  # context, cuDNN workspaces, allocator slack
USABLE_FRACTION = 0.9  # of the card's memory, the rest for fragmentation
BYTES_PER_SAVED_ELEMENT = {"bf16-mixed": 2.0, "16-mixed": 2.0, "32": 4.0, "32-true": 4.0}  # autocast saves half
BACKWARD_FACTOR = 1.3  # the saved tensors plus the gradient buffers alive at once during the backward pass
OPTIMISER_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, two moments (AdamW; SGD needs 12)


@dataclass(frozen=True)
class Fingerprint:
    """What the planning rules look at, per dataset (nnU-Net's ``dataset_fingerprint.json``)."""

    subjects: list[str]
    modalities: list[str]
    spacings: list[list[float]]  # per subject, mm, RAS+ axis order
    shapes: list[list[int]]  # per subject, voxels, RAS+ axis order (of the non-zero box when ``cropped``)
    intensities: dict[str, dict[str, float]]  # modality -> foreground mean, std, median, 0.5/99.5 percentiles
    class_fractions: dict[str, float]  # class -> share of the labelled voxels
    cropped: bool = False  # the shapes are of the boxes training crops to (crop_to_nonzero), as nnU-Net's

    @property
    def median_spacing(self) -> np.ndarray:
        return np.median(np.asarray(self.spacings, dtype=float), axis=0)

    @property
    def median_shape(self) -> np.ndarray:
        return np.median(np.asarray(self.shapes, dtype=float), axis=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical_axes(affine: np.ndarray) -> np.ndarray:
    """For each RAS+ axis, the voxel axis that runs along it (how reorientation permutes)."""
    return np.argmax(np.abs(np.asarray(affine)[:3, :3]), axis=0)


def fingerprint(subjects: Sequence[Subject], label_space: LabelSpace, modalities: Sequence[str],
                seed: int = 0, crop_to_nonzero: bool = False) -> Fingerprint:
    """Spacings and shapes (in RAS+ axis order), foreground intensity statistics per modality
    (up to :data:`SAMPLE_PER_SUBJECT` voxels a subject, seeded) and class frequencies of the
    labelled ``subjects``, read from their files as they are (no resampling, no normalisation).
    ``crop_to_nonzero``: the shapes are those of the boxes of non-zero or labelled voxels that
    training with that setting crops to, so that a patch is planned for what it will see."""
    if not subjects:
        raise ValueError("a fingerprint needs at least one labelled subject")
    rng = np.random.default_rng(seed)
    spacings, shapes = [], []
    samples: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    counts = np.zeros(label_space.num_classes, dtype=np.int64)
    for subject in subjects:
        label_data, label_affine = load_volume(subject.label)
        classes = label_space.encode(label_data, subject.label)
        order = _canonical_axes(label_affine)
        spacings.append([float(s) for s in voxel_spacing(label_affine)[order]])
        occupied = classes != 0 if crop_to_nonzero else None
        valid = classes[classes >= 0]
        counts += np.bincount(valid.ravel(), minlength=label_space.num_classes)[: label_space.num_classes]
        foreground = classes > 0
        channels = subject.image_channels or (None,) * len(subject.images)
        for modality, path, channel in zip(modalities, subject.images, channels, strict=True):
            image, _ = load_volume(path, channel)
            values = image[foreground] if image.shape == foreground.shape else image[image != 0]
            if occupied is not None and image.shape == occupied.shape:
                occupied |= image != 0
            if values.size:
                take = min(values.size, SAMPLE_PER_SUBJECT)
                samples[modality].append(rng.choice(values, size=take, replace=False))
        measured = classes.shape if occupied is None else occupied[nonzero_box(occupied[None])].shape
        shapes.append([int(n) for n in np.asarray(measured)[order]])
    intensities = {}
    for modality, parts in samples.items():
        values = np.concatenate(parts).astype(np.float64) if parts else np.zeros(1)
        intensities[modality] = {"mean": float(values.mean()), "std": float(values.std()),
                                 "percentile_00_5": float(np.percentile(values, 0.5)),
                                 "median": float(np.median(values)),
                                 "percentile_99_5": float(np.percentile(values, 99.5))}
    total = max(int(counts.sum()), 1)
    return Fingerprint(subjects=[s.subject_id for s in subjects], modalities=list(modalities),
                       spacings=spacings, shapes=shapes, intensities=intensities,
                       class_fractions={n: float(c) / total for n, c in zip(label_space.class_names, counts,
                                                                             strict=True)},
                       cropped=crop_to_nonzero)


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> tuple[list[float], str]:
    """nnU-Net's full-resolution target spacing: the median spacing; but when one axis is more
    than :data:`ANISOTROPY_RATIO` times coarser than the others *and* has few voxels, its target
    is the 10th percentile of that axis' spacings (never finer than the other axes), so that the
    many thin-slice scans are not thrown away to match the thick ones. Returns the spacing and why."""
    spacings = np.asarray(spacings, dtype=float)
    shapes = np.asarray(shapes, dtype=float)
    target = np.median(spacings, axis=0)
    target_size = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic = target[worst] > ANISOTROPY_RATIO * max(target[others])
    few_slices = target_size[worst] * ANISOTROPY_RATIO < min(target_size[others])
    if anisotropic and few_slices:
        finer = max(float(np.percentile(spacings[:, worst], 10)), float(max(target[others])) + 1e-5)
        target[worst] = finer
        why = (f"axis {worst} is {target[worst] / max(target[others]):.1f}x coarser than the others with "
               f"few slices: its target is the 10th percentile of its spacings")
    else:
        why = "median spacing of the training subjects" + (" (anisotropic, but enough slices)" if anisotropic else "")
    return [round(float(t), 5) for t in target], why


def dynunet_topology(patch: Sequence[int]) -> dict[str, Any]:
    """Levels and widths of a DynUNet for ``patch``: halve until the shortest side would drop
    below :data:`MIN_BOTTLENECK` (at most :data:`MAX_LEVELS` levels), 32 maps doubling to 320."""
    levels = 1
    while levels < MAX_LEVELS and min(patch) / 2 ** levels >= MIN_BOTTLENECK:
        levels += 1
    filters = [min(BASE_FEATURES * 2 ** i, MAX_FEATURES) for i in range(levels)]
    return {"levels": levels, "filters": filters, "deep_supervision": True, "deep_supr_num": min(2, levels - 2)}


FAMILIES = ("dynunet", "unet3d")


def network_for(family: str, patch: Sequence[int]) -> tuple[str, dict[str, Any], int]:
    """(registered name, its options, the size every patch side must divide by) of a family."""
    if family == "dynunet":
        kwargs = dynunet_topology(patch)
        return "dynunet", kwargs, 2 ** (kwargs["levels"] - 1)
    if family == "unet3d":  # three poolings; heads on the two decoder levels below the top
        return "unet3d", {"base_features": BASE_FEATURES, "deep_supervision": 2}, 8
    raise ValueError(f"no planning rules for {family!r}; families: {list(FAMILIES)}")


def saved_elements(network: nn.Module, in_channels: int, size: Sequence[int], batch_size: int = 1) -> int:
    """Elements of the tensors autograd saves for the backward pass of one training-mode forward
    pass (parameters excluded: they are counted once, with the optimiser), counted on the
    ``meta`` device: shapes only, nothing computed. ``network`` must be on ``meta``."""
    parameters = {id(p) for p in network.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in parameters:
            saved[id(tensor)] = tensor.numel()  # a tensor two operations save is kept once
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(torch.zeros(batch_size, in_channels, *size, device="meta"))
    return sum(saved.values())


@dataclass
class MemoryModel:
    """Training memory of one network, in GB, for a patch and batch size: the saved elements
    (``fixed`` plus ``per_voxel`` per input voxel and sample), their bytes at ``precision``,
    what the backward pass adds, 16 bytes per parameter (fp32 weight, gradient, two Adam
    moments) and the CUDA overhead."""

    parameters: int
    per_voxel: float
    fixed: float = 0.0
    precision: str = "bf16-mixed"

    @classmethod
    def of(cls, network: nn.Module, in_channels: int, divisor: int, precision: str = "bf16-mixed") -> MemoryModel:
        """Count ``network``'s saved elements at two probes (2 and 3 times ``divisor`` per side),
        on a ``meta`` copy: the network itself is left as it is."""
        parameters = sum(p.numel() for p in network.parameters())
        meta = copy.deepcopy(network).to("meta")
        small, large = ([k * divisor] * 3 for k in (2, 3))
        first, second = saved_elements(meta, in_channels, small), saved_elements(meta, in_channels, large)
        per_voxel = (second - first) / (math.prod(large) - math.prod(small))
        return cls(parameters, per_voxel, max(0.0, first - per_voxel * math.prod(small)), precision)

    def saved_bytes(self, patch: Sequence[int], batch_size: int) -> float:
        """What autograd keeps for the backward pass of one batch, in bytes."""
        per_element = BYTES_PER_SAVED_ELEMENT.get(self.precision, 4.0)
        return (self.fixed + batch_size * math.prod(patch) * self.per_voxel) * per_element

    def gigabytes(self, patch: Sequence[int], batch_size: int) -> float:
        activations = self.saved_bytes(patch, batch_size) * BACKWARD_FACTOR
        return (activations + self.parameters * OPTIMISER_BYTES_PER_PARAMETER) / 1e9 + CUDA_OVERHEAD_GB


@dataclass
class Plan:
    """A training plan: what ``plan.py`` writes as a preset YAML, and why."""

    family: str
    gpu_memory_gb: float
    target_spacing: list[float]
    median_shape: list[int]  # at the target spacing
    patch_size: list[int]
    batch_size: int
    network: str
    network_kwargs: dict[str, Any]
    parameters: int
    estimated_memory_gb: float
    reasons: list[str] = field(default_factory=list)


def _memory_model(family: str, patch: Sequence[int], in_channels: int, num_outputs: int, precision: str,
                  cache: dict[Any, MemoryModel]) -> MemoryModel:
    name, kwargs, divisor = network_for(family, patch)
    key = (name, repr(kwargs))
    if key not in cache:
        with torch.device("meta"):  # no weights allocated: only shapes are needed
            network = build_network(name, in_channels=in_channels, num_classes=num_outputs, **kwargs)
        cache[key] = MemoryModel.of(network, in_channels, divisor, precision)
    return cache[key]


def _round_to(values: Sequence[float], divisor: int) -> list[int]:
    return [max(divisor, int(v // divisor) * divisor) for v in values]  # never beyond the scan


def plan_training(fp: Fingerprint, family: str, gpu_memory_gb: float, in_channels: int, num_outputs: int,
                  precision: str = "bf16-mixed") -> Plan:
    """nnU-Net's 3d_fullres planning with a memory model in bytes (see the module docstring)."""
    spacing, why_spacing = target_spacing(fp.spacings, fp.shapes)
    spacings, shapes = np.asarray(fp.spacings, dtype=float), np.asarray(fp.shapes, dtype=float)
    median_shape = np.median(shapes * spacings / np.asarray(spacing), axis=0)
    budget = gpu_memory_gb * USABLE_FRACTION
    cache: dict[Any, MemoryModel] = {}
    # Start from a 256^3-voxel patch shaped like the physical field of view, no larger than the
    # median scan; shrink the side that is largest relative to the scan until a batch of 2 fits.
    aspect = 1.0 / np.asarray(spacing)
    start = aspect * (INITIAL_PATCH_VOXELS / math.prod(aspect)) ** (1 / 3)
    patch = np.minimum(start, median_shape)
    _, _, divisor = network_for(family, patch)
    patch = np.asarray(_round_to(patch, divisor), dtype=float)
    while True:
        _, _, divisor = network_for(family, patch)
        patch = np.asarray(_round_to(patch, divisor), dtype=float)
        model = _memory_model(family, patch, in_channels, num_outputs, precision, cache)
        if model.gigabytes(patch, MIN_BATCH) <= budget or patch.max() <= divisor:
            break
        axis = int(np.argmax(patch / median_shape))
        patch[axis] = max(divisor, patch[axis] - divisor)
    patch_size = [int(p) for p in patch]
    name, kwargs, _ = network_for(family, patch_size)
    per_sample = model.gigabytes(patch_size, 2) - model.gigabytes(patch_size, 1)
    fixed = model.gigabytes(patch_size, 1) - per_sample
    fits = max(MIN_BATCH, int((budget - fixed) // per_sample)) if per_sample > 0 else MIN_BATCH
    dataset_voxels = float(np.sum(np.prod(shapes * spacings / np.asarray(spacing), axis=1)))
    covered = max(MIN_BATCH, int(MAX_DATASET_COVERED * dataset_voxels // math.prod(patch_size)))
    batch_size = min(fits, covered)
    reasons = [
        f"target spacing {spacing}: {why_spacing}",
        f"median shape at that spacing {[int(round(m)) for m in median_shape]}",
        f"patch {patch_size}: the largest field of view, shaped like the scans, whose batch of {MIN_BATCH} fits "
        f"{gpu_memory_gb:g} GB (x{USABLE_FRACTION}); sides divisible by {network_for(family, patch_size)[2]}",
        f"batch {batch_size}: {fits} would fit, at most {covered} keep a batch under "
        f"{MAX_DATASET_COVERED:.0%} of the dataset's voxels",
        f"{name} {kwargs}: {model.parameters / 1e6:.1f} M parameters",
    ]
    return Plan(family, float(gpu_memory_gb), spacing, [int(round(m)) for m in median_shape], patch_size,
                int(batch_size), name, kwargs, model.parameters,
                round(model.gigabytes(patch_size, batch_size), 2), reasons)


def preset(plan: Plan, fp: Fingerprint) -> dict[str, Any]:
    """The plan as a config to compose after the dataset's own (``--config``)."""
    same_spacing = all(np.allclose(s, plan.target_spacing, atol=1e-3) for s in fp.spacings)
    return {
        "data": {"init_args": {
            "target_spacing": None if same_spacing else plan.target_spacing,
            "patch_size": plan.patch_size,
            "batch_size": plan.batch_size,
            "sampling": "class_balanced",
            "class_balanced_fraction": 0.33,
        }},
        "model": {"network": plan.network, "network_kwargs": plan.network_kwargs, "inference_roi_size": None},
    }


def describe_fingerprint(fp: Fingerprint) -> list[str]:
    """A few lines for a human: spacings, shapes, intensities, class frequencies."""
    spacing, shape = fp.median_spacing, fp.median_shape
    low, high = (np.round(f(fp.spacings, axis=0), 3).tolist() for f in (np.min, np.max))
    lines = [f"{len(fp.subjects)} subjects; median spacing {np.round(spacing, 3).tolist()} mm (min {low}, max {high}); "
             f"median shape {shape.astype(int).tolist()}" + (" (of the non-zero boxes training crops to)"
                                                             if fp.cropped else "")]
    for modality, stats in fp.intensities.items():
        lines.append(f"{modality}: foreground mean {stats['mean']:.4g}, std {stats['std']:.4g}, "
                     f"0.5-99.5 % {stats['percentile_00_5']:.4g} .. {stats['percentile_99_5']:.4g}")
    lines.append("classes: " + ", ".join(f"{n} {f:.2%}" for n, f in fp.class_fractions.items()))
    return lines
