"""Tensor operations on whole batches of 3D volumes with parameters per volume, so that an
augmentation step is one call for the batch on the model's device (``augment_on: device``),
not a loop of small calls per patch while the GPU waits.

Shapes: images ``(B, C, D, H, W)``, labels ``(B, 1, D, H, W)``, volumes ``(N, D, H, W)``.
Nothing here draws random numbers: callers pass the parameters (drawn on the host, see
:class:`datamodules.augmentation.BatchRandom`) or tensors drawn on the device.

Nothing here waits for the device either: host numbers reach a GPU through pinned memory
without blocking (:func:`to_device`), and no result is read back, so the CPU queues the
augmentation behind the previous step's work instead of stalling until the GPU is idle (a
``.item()``, a boolean-mask index or a blocking copy each would). ``torch.cuda.set_sync_debug_mode``
checks it on a GPU (``benchmarks/augmentation_device.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale, create_translate


def to_device(values: object, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host numbers (array, list, CPU tensor) as a tensor on ``device``; to a GPU through pinned
    memory and a non-blocking copy, so the host does not wait for the device's queue."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def brain_masks(image: torch.Tensor) -> torch.Tensor:
    """``(B, 1, D, H, W)``: voxels where any channel is non-zero (z-scoring leaves the background
    exactly 0)."""
    return (image != 0).any(dim=1, keepdim=True)


def masked_channel_stats(image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per patch and channel, over the voxels of ``mask`` (``(B, 1, ...)``): ``count`` ``(B, 1)``,
    ``min``, ``max``, ``mean`` and ``std`` (unbiased, as torch's) ``(B, C)``. Empty masks give
    infinite extremes and a NaN-free 0 mean; callers keep such patches unchanged."""
    values = image.flatten(2)
    inside = mask.flatten(2)
    count = inside.sum(-1).to(image.dtype)
    mean = torch.where(inside, values, 0.0).sum(-1) / count.clamp_min(1.0)
    centred = torch.where(inside, values - mean[..., None], 0.0)
    std = (centred.square().sum(-1) / (count - 1.0).clamp_min(1.0)).sqrt()
    return {"count": count, "mean": mean, "std": std,
            "min": torch.where(inside, values, torch.inf).amin(-1),
            "max": torch.where(inside, values, -torch.inf).amax(-1)}


def gaussian_kernels(sigmas: Sequence[float], truncate: float, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """``(N, 2R + 1)`` normalised Gaussian taps, one row per sigma, each truncated at its own
    ``truncate`` sigma (SciPy's radius ``int(truncate * sigma + 0.5)``, at least 1) and padded
    with zeros to the largest radius R, so one convolution applies them all. Sigma 0: identity."""
    radii = [max(1, int(truncate * s + 0.5)) for s in sigmas]
    largest = max(radii)
    taps = torch.arange(-largest, largest + 1, dtype=torch.float64)
    rows = []
    for sigma, radius in zip(sigmas, radii, strict=True):
        if sigma <= 0:
            row = (taps == 0).double()
        else:
            row = torch.where(taps.abs() <= radius, torch.exp(-0.5 * (taps / sigma) ** 2), 0.0)
        rows.append(row / row.sum())
    return to_device(torch.stack(rows).to(dtype), device)


def blur(volumes: torch.Tensor, sigmas: Sequence[Sequence[float]], truncate: float = 3.0,
         edges: str = "replicate") -> torch.Tensor:
    """``volumes`` ``(N, D, H, W)`` each smoothed by a Gaussian of its own ``sigmas[n][axis]``
    voxels along each axis (0: that axis untouched), in one grouped convolution per axis.
    ``edges``: ``replicate`` (SciPy's ``nearest``) or ``zeros`` (SciPy's ``constant``)."""
    if edges not in ("replicate", "zeros"):
        raise ValueError(f"edges must be 'replicate' or 'zeros', got {edges!r}")
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(len(volumes), 3)
    out = volumes[None]
    for axis in range(3):
        if not (sigmas[:, axis] > 0).any():
            continue
        kernels = gaussian_kernels(sigmas[:, axis].tolist(), truncate, volumes.dtype, volumes.device)
        radius = kernels.shape[1] // 2
        shape = [len(volumes), 1, 1, 1, 1]
        shape[2 + axis] = kernels.shape[1]
        padding = [0, 0] * 3
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        padded = F.pad(out, padding, mode="replicate") if edges == "replicate" else F.pad(out, padding)
        out = F.conv3d(padded, kernels.view(shape), groups=len(volumes))
    return out[0]


def sample(image: torch.Tensor, label: torch.Tensor, grid: torch.Tensor,
           align_corners: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (linear) and label (nearest) sampled on one grid ``(B, D, H, W, 3)``; outside is 0."""
    moved = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    labels = F.grid_sample(label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=align_corners)
    return moved, torch.round(labels).long()


def displacement_grid(displacement: torch.Tensor) -> torch.Tensor:
    """The ``grid_sample`` grid (``align_corners=True``) that samples every voxel at its index
    plus ``displacement`` ``(B, 3, D, H, W)`` (voxels along D, H, W)."""
    batch, _, *shape = displacement.shape
    grid = torch.empty((batch, *shape, 3), dtype=displacement.dtype, device=displacement.device)
    for axis, n in enumerate(shape):
        scale = 2.0 / max(n - 1, 1)
        index = (torch.arange(n, dtype=displacement.dtype, device=displacement.device) * scale - 1.0).view(
            [n if a == axis else 1 for a in range(3)])
        # grid_sample wants (x, y, z) = (W, H, D) last.
        torch.add(index, displacement[:, axis], alpha=scale, out=grid[..., 2 - axis])
    return grid


def affine_thetas(shape: Sequence[int], rotations: np.ndarray, grid_scales: np.ndarray,
                  translations: np.ndarray) -> torch.Tensor:
    """``(B, 3, 4)`` for ``F.affine_grid(..., align_corners=False)``: per patch, MONAI's affine
    about the patch centre as ``monai.transforms.Affine`` composes it (rotation radians in
    MONAI's order, then translation in voxels, then MONAI's grid scale factors: the grid is
    scaled, so 1.1 shrinks the anatomy), mapped to grid_sample's normalised (x, y, z) space."""
    half = np.diag([n / 2.0 for n in shape])  # centred voxel coordinate = half @ normalised one
    thetas = []
    for rotation, scale, translation in zip(rotations, grid_scales, translations, strict=True):
        matrix = create_rotate(3, rotation) @ create_translate(3, translation) @ create_scale(3, scale)
        linear = np.linalg.solve(half, matrix[:3, :3] @ half)
        offset = np.linalg.solve(half, matrix[:3, 3])
        # Reverse the axes: (D, H, W) -> (x, y, z) = (W, H, D).
        thetas.append(np.concatenate([linear[::-1, ::-1], offset[::-1, None]], axis=1))
    return torch.as_tensor(np.stack(thetas), dtype=torch.float32)  # host: callers move it (to_device)


def legendre_fields(shape: Sequence[int], coefficients: np.ndarray, degree: int,
                    device: torch.device) -> torch.Tensor:
    """``(B, D, H, W)``: per patch, the sum of ``coefficients[b, n] * P_i(z) P_j(y) P_k(x)`` over
    MONAI's RandBiasField terms (i + j + k <= degree, in its order), coordinates in [-1, 1]."""
    terms = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]
    if coefficients.shape[1] != len(terms):
        raise ValueError(f"degree {degree} has {len(terms)} terms, got {coefficients.shape[1]} coefficients")
    bases = [to_device(np.stack([np.polynomial.legendre.legval(np.linspace(-1.0, 1.0, n, dtype=np.float32),
                                                               np.eye(degree + 1)[order])
                                 for order in range(degree + 1)]), device, torch.float32)
             for n in shape]  # (degree + 1, n) per axis
    grid = torch.zeros((len(coefficients), *(degree + 1,) * 3), dtype=torch.float32)
    index = torch.as_tensor(terms)
    grid[:, index[:, 0], index[:, 1], index[:, 2]] = torch.as_tensor(coefficients, dtype=torch.float32)
    return torch.einsum("bijk,id,jh,kw->bdhw", to_device(grid, device), *bases)
