"""Contrast-agnostic training images generated from label maps alone, as SynthSeg's generator
(Billot et al., MedIA 2023) makes them: one augmentation step, ``labels_to_image``, that
replaces a training patch's image by a synthetic one drawn from its (already deformed) label
patch. Put the spatial steps (``affine``, ``elastic``) before it; every intensity property
is drawn anew per patch, so no contrast is ever seen twice and the network learns shapes.

Per patch, in this order (ranges are the options; defaults follow SynthSeg's training):
1. a Gaussian mixture: per label, a mean in ``means`` and a spread in ``stds`` (0-255 scale);
   the background stays 0 (``background: zero``, the convention of this codebase's skull-
   stripped inputs) or gets its own random Gaussian (``random``);
2. partial volume: a Gaussian blur of ``blur_sigma`` voxels (drawn), as tissue boundaries
   look in a scan at the labels' own resolution;
   resolution: with ``resolution_prob``, one random axis is made ``thickness`` voxels thick
   (Gaussian blur of that full width at half maximum, then down- and up-sampled), as a scan
   with thick slices;
3. a smooth multiplicative bias field: ``exp`` of a coarse Gaussian grid (``bias_grid`` points
   per axis, its spread drawn from ``bias_std``), upsampled;
4. Gaussian noise of a spread drawn from ``noise_std``;
5. gamma: brain intensities scaled to [0, 1], raised to ``exp(N(0, gamma_std))``;
6. the z-score over the brain (non-background) voxels, background exactly 0: what the
   preprocessing gives real scans.

Randomness comes only from the step's ``rng`` (NumPy for the draws, a seeded torch generator
for the voxel noise on the patch's device), so a seeded generator reproduces a patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

import datamodules.batch_ops as batch_ops


def _interval(name: str, value: Sequence[float], low: float = 0.0) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be two numbers [low, high], got {value!r}") from error
    if not low <= a <= b:
        raise ValueError(f"{name} must satisfy {low} <= low <= high, got {value!r}")
    return a, b


def blur_axes(volume: torch.Tensor, sigmas: Sequence[float], truncate: float = 3.0) -> torch.Tensor:
    """``volume`` (D, H, W) smoothed by a Gaussian of ``sigmas[axis]`` voxels along each axis
    (0: that axis untouched), edges replicated."""
    return batch_ops.blur(volume[None], [sigmas], truncate)[0]


class LabelsToImage:
    """Replaces the patch's image by one channel generated from its label patch (see the module).

    The label (1, D, H, W) holds class indices (``-1``: ignored voxels, which get an intensity
    of their own); it is returned unchanged.
    """

    def __init__(self, means: Sequence[float] = (25.0, 225.0), stds: Sequence[float] = (5.0, 25.0),
                 background: Literal["zero", "random"] = "zero", blur_sigma: Sequence[float] = (0.0, 1.0),
                 resolution_prob: float = 0.5,
                 thickness: Sequence[float] = (1.0, 4.0), bias_std: Sequence[float] = (0.0, 0.5),
                 bias_grid: int = 4, noise_std: Sequence[float] = (0.0, 10.0), gamma_std: float = 0.4) -> None:
        self.means = _interval("means", means)
        self.stds = _interval("stds", stds)
        if background not in ("zero", "random"):
            raise ValueError(f"background must be 'zero' or 'random', got {background!r}")
        self.background = background
        self.blur_sigma = _interval("blur_sigma", blur_sigma)
        if not 0.0 <= resolution_prob <= 1.0:
            raise ValueError(f"resolution_prob must lie in [0, 1], got {resolution_prob}")
        self.resolution_prob = float(resolution_prob)
        self.thickness = _interval("thickness", thickness, low=1.0)
        self.bias_std = _interval("bias_std", bias_std)
        if int(bias_grid) < 2:
            raise ValueError(f"bias_grid must be at least 2 points per axis, got {bias_grid}")
        self.bias_grid = int(bias_grid)
        self.noise_std = _interval("noise_std", noise_std)
        if gamma_std < 0:
            raise ValueError(f"gamma_std must be >= 0, got {gamma_std}")
        self.gamma_std = float(gamma_std)

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        classes = label[0].long()
        device = classes.device
        noise = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        count = int(classes.max().item()) + 2  # every class, and one more for ignored voxels (-1)
        means = torch.as_tensor(rng.uniform(*self.means, count), dtype=torch.float32, device=device)
        stds = torch.as_tensor(rng.uniform(*self.stds, count), dtype=torch.float32, device=device)
        if self.background == "zero":
            means[0] = stds[0] = 0.0
        index = torch.where(classes < 0, count - 1, classes)
        volume = means[index] + stds[index] * torch.randn(classes.shape, generator=noise, device=device)
        sigma = rng.uniform(*self.blur_sigma)
        if sigma > 0:
            volume = blur_axes(volume, [sigma] * 3)
        if rng.random() < self.resolution_prob:
            volume = self._thick_slices(volume, rng)
        field = torch.randn((1, 1, *[self.bias_grid] * 3), generator=noise, device=device) * rng.uniform(*self.bias_std)
        volume = volume * torch.exp(F.interpolate(field, size=tuple(volume.shape), mode="trilinear",
                                                  align_corners=True)[0, 0])
        volume = volume + rng.uniform(*self.noise_std) * torch.randn(volume.shape, generator=noise, device=device)
        brain = classes != 0 if self.background == "zero" else torch.ones_like(classes, dtype=torch.bool)
        return self._normalised(volume.clamp_min(0.0), brain, rng)[None], label

    def batch(self, image: torch.Tensor, label: torch.Tensor, random: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The same generator for a batch on its device (``augment_on: device``), the same
        distributions, one batched call per stage: parameters drawn per patch on the host from
        ``random.rng``, voxel noise on the device from ``random.noise``, nothing read back. The
        class count comes from ``random.classes`` (the label space's, given by the DataModule);
        without it the batch's largest class is read once."""
        classes = label[:, 0].long()
        batch, shape, device, rng = len(classes), tuple(classes.shape[1:]), classes.device, random.rng
        count = (random.classes if random.classes is not None else int(classes.max().item()) + 1) + 1  # + ignored
        means, stds = rng.uniform(*self.means, (batch, count)), rng.uniform(*self.stds, (batch, count))
        if self.background == "zero":
            means[:, 0] = stds[:, 0] = 0.0
        index = torch.where(classes < 0, count - 1, classes).flatten(1)
        mean = batch_ops.to_device(means, device, torch.float32).gather(1, index).view(classes.shape)
        spread = batch_ops.to_device(stds, device, torch.float32).gather(1, index).view(classes.shape)
        volume = mean + spread * torch.randn(classes.shape, generator=random.noise, device=device)
        volume = batch_ops.blur(volume, [[sigma] * 3 for sigma in rng.uniform(*self.blur_sigma, batch)])
        for patch in [b for b in range(batch) if rng.random() < self.resolution_prob]:
            volume[patch] = self._thick_slices(volume[patch], rng)
        field = torch.randn((batch, 1, *[self.bias_grid] * 3), generator=random.noise, device=device)
        bias_spread = batch_ops.to_device(rng.uniform(*self.bias_std, batch), device, torch.float32)
        field = field * bias_spread.view(-1, 1, 1, 1, 1)
        volume = volume * torch.exp(F.interpolate(field, size=shape, mode="trilinear", align_corners=True)[:, 0])
        noise = batch_ops.to_device(rng.uniform(*self.noise_std, batch), device, torch.float32).view(-1, 1, 1, 1)
        volume = volume + noise * torch.randn(volume.shape, generator=random.noise, device=device)
        brain = (classes != 0) if self.background == "zero" else torch.ones_like(classes, dtype=torch.bool)
        gammas = np.exp(rng.normal(0.0, self.gamma_std, batch))
        return self._normalised_batch(volume.clamp_min(0.0)[:, None], brain[:, None], gammas), label

    @staticmethod
    def _normalised_batch(volume: torch.Tensor, brain: torch.Tensor, gammas: np.ndarray) -> torch.Tensor:
        """:meth:`_normalised` of every patch of ``volume`` ``(B, 1, D, H, W)``, its gamma
        ``gammas[b]``; a patch without two brain voxels is all 0."""
        stats = batch_ops.masked_channel_stats(volume, brain)
        shape = (len(volume), 1, 1, 1, 1)
        low, high = stats["min"].view(shape), stats["max"].view(shape)
        power = batch_ops.to_device(gammas, volume.device, volume.dtype).view(shape)
        scaled = ((volume - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0) ** power
        scaled_stats = batch_ops.masked_channel_stats(scaled, brain)
        z = (scaled - scaled_stats["mean"].view(shape)) / scaled_stats["std"].view(shape).clamp_min(1e-6)
        enough = (stats["count"] > 1).view(shape)
        return torch.where(brain & enough, z, torch.zeros((), dtype=volume.dtype))

    def _thick_slices(self, volume: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One random axis made ``thickness`` voxels thick: blurred to that width, sampled on the
        thick grid, and interpolated back (a scan with thick slices, resampled)."""
        axis = int(rng.integers(3))
        thickness = rng.uniform(*self.thickness)
        sigmas = [0.0, 0.0, 0.0]
        sigmas[axis] = thickness / 2.355  # a Gaussian of full width at half maximum = the thickness
        blurred = blur_axes(volume, sigmas)
        small = list(volume.shape)
        small[axis] = max(1, round(volume.shape[axis] / thickness))
        coarse = F.interpolate(blurred[None, None], size=small, mode="trilinear", align_corners=True)
        return F.interpolate(coarse, size=tuple(volume.shape), mode="trilinear", align_corners=True)[0, 0]

    def _normalised(self, volume: torch.Tensor, brain: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Gamma on [0, 1]-scaled brain intensities, then the z-score over the brain; background 0."""
        if not bool(brain.any()):
            return torch.zeros_like(volume)
        inside = volume[brain]
        low, high = inside.min(), inside.max()
        scaled = (volume - low) / (high - low).clamp_min(1e-6)
        scaled = scaled.clamp(0.0, 1.0) ** float(np.exp(rng.normal(0.0, self.gamma_std)))
        inside = scaled[brain]
        z = (scaled - inside.mean()) / inside.std().clamp_min(1e-6) if inside.numel() > 1 else scaled * 0
        return torch.where(brain, z, torch.zeros_like(z))
