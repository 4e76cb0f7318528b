"""Training-time augmentation of 3D patches: a configurable list of random transforms (MONAI's,
and an elastic deformation of our own, built like MONAI's but several times faster).

A list of specs such as ``[{"name": "flip"}, {"name": "affine", "prob": 0.3}]`` becomes one
``Augmentation`` that is called as ``augment(image, label, rng)`` on every training patch:
image ``(C, D, H, W)`` float32 (z-scored, background exactly 0), label ``(1, D, H, W)`` int64
(``-1`` marks ignored voxels). Steps run in list order, each with its own probability.

Randomness comes only from ``rng``: each step draws whether it fires from it and, when it does,
seeds its MONAI transform (or draws its elastic field) from it, so a seeded generator reproduces a patch exactly and
DataLoader workers (different generators) draw different augmentations.

- Spatial steps (``flip``, ``affine``, ``elastic``) draw one transform per patch and apply it to
  every image channel (linear interpolation) and to the label (nearest neighbour, so label
  values, ``-1`` included, stay in the input's set). What comes from outside the patch is 0 in
  both (background).
- Intensity steps (``gamma``, ``bias_field``, ``noise``, ``blur``, ``brightness``, ``contrast``,
  ``low_resolution``: nnU-Net's set) change the image inside the brain mask
  only (voxels where any channel is non-zero), so the background stays exactly 0 as z-scoring
  left it, and never touch the label.
- ``labels_to_image`` replaces the image by one channel generated from the label patch alone
  (SynthSeg's generator, :mod:`datamodules.synthesis`): after the spatial steps, for models of
  any contrast.

Two paths, one set of steps and options:

- ``augment(image, label, rng)``, patch by patch in the DataLoader's CPU workers (the default,
  ``augment_on: loader``); MONAI's transforms and SciPy's filters do the work.
- ``augment.batch(images, labels, rng)``, the whole training batch in one call per step on the
  model's device after the transfer (``augment_on: device``): each step's decisions and
  parameters are drawn per patch on the host (a few numbers, no device synchronisation), its
  voxel fields (elastic, noise) on the device from a generator seeded from ``rng``, and it is
  applied to the patches that fire in batched tensor operations (:mod:`datamodules.batch_ops`).
  The draws follow the same distributions as the patch path but not the same sequence, so a
  seed gives other (equally distributed) augmentations on the two paths; with fixed
  parameters the two give the same patch (tested per step).

Units are the user's, not MONAI's: rotations in degrees, scaling as the fractional change of
the anatomy's size, elastic displacements in voxels (MONAI's elastic ``magnitude`` multiplies a
Gaussian-smoothed field whose amplitude shrinks like ``sigma**-1.5``: it has no usable unit; see
``Elastic``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    RandAdjustContrast,
    RandAffined,
    RandBiasField,
    RandGaussianNoise,
)
from scipy import ndimage

import datamodules.batch_ops as batch_ops
from datamodules.synthesis import LabelsToImage, blur_axes

AUGMENTATIONS: tuple[str, ...] = ("flip", "affine", "elastic", "gamma", "bias_field", "noise", "blur", "brightness",
                                   "contrast", "low_resolution")  # each keeps the patch's channels
GENERATORS: tuple[str, ...] = ("labels_to_image",)  # a new image (one channel) from the label patch

_KEYS = ("image", "label")
_MODES = ("bilinear", "nearest")
_ELASTIC_TRUNCATION = 3.0  # as MONAI's Rand3DElastic: the Gaussian is truncated at 3 sigma


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain torch.Tensor (MONAI returns MetaTensors, which collate and pickle differently)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _probability(value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {value}")
    return value


def _range(name: str, value: Any, low: float | None = None) -> tuple[float, float]:
    """A ``(min, max)`` pair; a single number ``x`` means ``(x, x)``."""
    if isinstance(value, int | float):
        value = (value, value)
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be a (min, max) pair with min <= max, got {value!r}")
    if low is not None and pair[0] <= low:
        raise ValueError(f"{name} must be > {low}, got {value!r}")
    return pair  # type: ignore[return-value]


def _per_axis(name: str, value: Any) -> tuple[float, float, float]:
    """One non-negative number per spatial axis; a single number applies to all three."""
    if isinstance(value, int | float):
        value = (value,) * 3
    triple = tuple(float(v) for v in value)
    if len(triple) != 3 or min(triple) < 0:
        raise ValueError(f"{name} must be a number or 3 numbers, all >= 0, got {value!r}")
    return triple  # type: ignore[return-value]


def _brain_mask(image: torch.Tensor) -> torch.Tensor:
    """Voxels where any channel is non-zero: z-scoring leaves the background exactly 0."""
    return (image != 0).any(dim=0)


class BatchRandom:
    """The randomness of one batch on the device path: decisions and per-patch parameters from
    the NumPy generator ``rng`` (host numbers, so choosing never waits for the device), voxel
    fields from ``noise``, a torch generator on the batch's device seeded from ``rng``."""

    def __init__(self, rng: np.random.Generator, device: torch.device, classes: int | None = None) -> None:
        self.rng = rng
        self.noise = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        self.classes = classes  # the label space's class count, where the caller knows it

    def fires(self, prob: float, count: int) -> list[int]:
        """The patches (indices of ``count``) for which a step of probability ``prob`` fires."""
        return [i for i in range(count) if self.rng.random() < prob]

    def channels(self, prob: float, patches: int, channels: int) -> list[tuple[int, int]]:
        """The (patch, channel) pairs for which a per-channel change of probability ``prob`` fires."""
        return [(b, c) for b in range(patches) for c in range(channels) if self.rng.random() < prob]


def _indices(chosen: Sequence[int], device: torch.device) -> torch.Tensor:
    return batch_ops.to_device(list(chosen), device, torch.long)


def _on_patches(chosen: Sequence[int], image: torch.Tensor, label: torch.Tensor, change: Any,
                moves_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches ``chosen`` changed and put back in their places (new tensors, the inputs
    untouched): ``change(images, labels)`` returns both, or with ``moves_labels=False``
    ``change(images)`` returns the images and the labels stay as they are."""
    index = _indices(chosen, image.device)
    if not moves_labels:
        return image.index_copy(0, index, change(image.index_select(0, index))), label
    changed_image, changed_label = change(image.index_select(0, index), label.index_select(0, index))
    return image.index_copy(0, index, changed_image), label.index_copy(0, index, changed_label)


class Flip:
    """Mirror along each axis in ``axes`` (0, 1, 2 = D, H, W) independently with probability ``prob``.

    The commonest augmentation (nnU-Net mirrors all axes); drop an axis from ``axes`` when the
    classes are lateralised (left/right structures) along it."""

    def __init__(self, prob: float = 0.5, axes: Sequence[int] = (0, 1, 2)) -> None:
        self.prob = _probability(prob)
        self.axes = tuple(int(a) for a in axes)
        if any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"axes must be distinct spatial axes among 0, 1, 2, got {axes!r}")

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # A flip is exact and needs no resampling, so it is drawn here rather than via MONAI.
        dims = [a + 1 for a in self.axes if rng.random() < self.prob]
        if not dims:
            return image, label
        return torch.flip(image, dims), torch.flip(label, dims)

    def batch(self, image: torch.Tensor, label: torch.Tensor,
              random: BatchRandom) -> tuple[torch.Tensor, torch.Tensor]:
        groups: dict[tuple[int, ...], list[int]] = {}  # the axes mirrored -> the patches mirrored so
        for patch in range(len(image)):
            groups.setdefault(tuple(a + 2 for a in self.axes if random.rng.random() < self.prob), []).append(patch)
        for dims, chosen in groups.items():
            if not dims:
                continue
            if len(chosen) == len(image):  # one flip of the whole batch
                return torch.flip(image, dims), torch.flip(label, dims)
            image, label = _on_patches(chosen, image, label, lambda i, lab, d=dims: (i.flip(d), lab.flip(d)))
        return image, label


class Affine:
    """Random rotation, per-axis scaling and translation, about the patch centre.

    - ``rotate_degrees``: rotation about each axis (D, H, W) drawn from ``[-a, a]`` degrees
      (one number for all axes, or three).
    - ``scale``: ``(min, max)`` fractional change of the anatomy's size, drawn independently per
      axis: ``0.1`` makes structures 10 % larger. MONAI's own ``scale_range`` scales the sampling
      grid, i.e. the inverse (+0.1 there shrinks the anatomy); this converts.
    - ``translate``: shift along each axis drawn from ``[-t, t]`` voxels.
    """

    def __init__(self, prob: float = 0.2, rotate_degrees: float | Sequence[float] = 15.0,
                 scale: Sequence[float] = (-0.15, 0.15), translate: float | Sequence[float] = 0.0) -> None:
        self.prob = _probability(prob)
        self.rotate_degrees = _per_axis("rotate_degrees", rotate_degrees)
        self.scale = _range("scale", scale, low=-1.0)
        self.translate = _per_axis("translate", translate)
        # Anatomy zoom z corresponds to MONAI grid factor 1/z, i.e. scale_range value 1/z - 1.
        grid_scale = (1.0 / (1.0 + self.scale[1]) - 1.0, 1.0 / (1.0 + self.scale[0]) - 1.0)
        self._grid_scale = grid_scale
        self._transform = RandAffined(
            keys=_KEYS, mode=_MODES, padding_mode="zeros", prob=1.0,
            rotate_range=[(-np.deg2rad(a), np.deg2rad(a)) for a in self.rotate_degrees],
            scale_range=[grid_scale] * 3,
            translate_range=[(-t, t) for t in self.translate],
        )

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if rng.random() >= self.prob:
            return image, label
        self._transform.set_random_state(seed=_seed(rng))  # one draw for image and label
        out = self._transform({"image": image, "label": label.float()})
        return _plain(out["image"]).float(), torch.round(_plain(out["label"])).long()

    def batch(self, image: torch.Tensor, label: torch.Tensor,
              random: BatchRandom) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = random.fires(self.prob, len(image))
        if not chosen:
            return image, label
        rotations = random.rng.uniform(-1.0, 1.0, (len(chosen), 3)) * np.deg2rad(self.rotate_degrees)
        grid_scales = 1.0 + random.rng.uniform(*self._grid_scale, (len(chosen), 3))
        translations = random.rng.uniform(-1.0, 1.0, (len(chosen), 3)) * np.asarray(self.translate)
        return self.apply_batch(image, label, chosen, rotations, grid_scales, translations)

    @staticmethod
    def apply_batch(image: torch.Tensor, label: torch.Tensor, chosen: Sequence[int], rotations: np.ndarray,
                    grid_scales: np.ndarray, translations: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The patches ``chosen`` moved by MONAI's affine of the given parameters (radians, grid
        scale factors, voxels), as the patch path's RandAffined resamples them."""
        thetas = batch_ops.to_device(batch_ops.affine_thetas(image.shape[2:], rotations, grid_scales, translations),
                                     image.device)
        grid = F.affine_grid(thetas, [len(chosen), *image.shape[1:]], align_corners=False)
        return _on_patches(chosen, image, label,
                           lambda part, labels: batch_ops.sample(part, labels, grid, align_corners=False))


def elastic_field(shape: Sequence[int], sigma: float, rms: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field (3, D, H, W) in voxels: uniform(-1, 1) noise per axis,
    smoothed by a Gaussian of ``sigma`` voxels (zero-padded, truncated at 3 sigma, as MONAI's
    Rand3DElastic), then scaled so its root-mean-square along each axis is exactly ``rms``."""
    field = rng.random((3, *shape), dtype=np.float32)  # float32 directly: half the time of uniform()
    field *= 2.0
    field -= 1.0
    for axis in range(3):
        ndimage.gaussian_filter(field[axis], sigma, mode="constant", truncate=_ELASTIC_TRUNCATION,
                                output=field[axis])
        flat = field[axis].ravel()
        root_mean_square = float(np.sqrt(np.dot(flat, flat) / flat.size))
        field[axis] *= rms / max(root_mean_square, 1e-12)
    return field


def warp(image: torch.Tensor, label: torch.Tensor, displacement: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample image (linear) and label (nearest) at ``voxel + displacement`` (voxels, per spatial
    axis), one grid for both; outside the patch is 0."""
    grid = batch_ops.displacement_grid(torch.from_numpy(displacement).to(image.device)[None])
    moved, moved_label = batch_ops.sample(image[None], label[None], grid, align_corners=True)
    return moved[0], moved_label[0]


class Elastic:
    """Smooth random deformation, parametrised in voxels.

    - ``sigma``: ``(min, max)`` smoothness of the displacement field in voxels (Gaussian std).
    - ``magnitude``: ``(min, max)`` root-mean-square displacement along each axis in voxels,
      over the patch; the largest displacement in a patch is typically 4-5 times that. (MONAI's
      Rand3DElastic ``magnitude`` has no usable unit: its smoothed field shrinks like
      ``sigma**-1.5``, so the same number moves anatomy by very different amounts.)

    Keep ``magnitude / sigma`` below about 0.3: beyond it the field starts to fold (negative
    Jacobian determinant), tearing anatomy rather than bending it.

    The field is the same as MONAI's Rand3DElastic (smoothed uniform noise, 3-sigma Gaussian,
    zero padding), but smoothed with SciPy's separable filter instead of a full 3D convolution:
    5-12x faster on one CPU thread, which is what a DataLoader worker has.
    """

    def __init__(self, prob: float = 0.2, sigma: Sequence[float] = (6.0, 9.0),
                 magnitude: Sequence[float] = (1.0, 2.0)) -> None:
        self.prob = _probability(prob)
        self.sigma = _range("sigma", sigma, low=0.0)
        self.magnitude = _range("magnitude", magnitude)
        if self.magnitude[0] < 0:
            raise ValueError(f"magnitude must be >= 0, got {magnitude!r}")

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if rng.random() >= self.prob:
            return image, label
        sigma = float(rng.uniform(*self.sigma))
        rms = float(rng.uniform(*self.magnitude))
        return warp(image, label, elastic_field(tuple(image.shape[1:]), sigma, rms, rng))

    def batch(self, image: torch.Tensor, label: torch.Tensor,
              random: BatchRandom) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = random.fires(self.prob, len(image))
        if not chosen:
            return image, label
        sigmas = random.rng.uniform(*self.sigma, len(chosen))
        magnitudes = random.rng.uniform(*self.magnitude, len(chosen))
        noise = torch.rand((len(chosen), 3, *image.shape[2:]), generator=random.noise, device=image.device)
        grid = batch_ops.displacement_grid(smooth_fields(noise * 2.0 - 1.0, sigmas, magnitudes))
        return _on_patches(chosen, image, label,
                           lambda part, labels: batch_ops.sample(part, labels, grid, align_corners=True))


def smooth_fields(noise: torch.Tensor, sigmas: Sequence[float], rms: Sequence[float]) -> torch.Tensor:
    """:func:`elastic_field` for a batch on its device: ``noise`` ``(B, 3, D, H, W)`` (uniform in
    [-1, 1]) smoothed per patch by a Gaussian of ``sigmas[b]`` voxels (zero-padded, truncated at 3
    sigma), each axis scaled to a root-mean-square of exactly ``rms[b]`` voxels."""
    batch = len(noise)
    per_component = np.repeat(np.asarray(sigmas, dtype=np.float64), 3)  # a patch's sigma for its 3 components
    smoothed = batch_ops.blur(noise.flatten(0, 1), [[sigma] * 3 for sigma in per_component], _ELASTIC_TRUNCATION,
                              edges="zeros").view(noise.shape)
    current = smoothed.flatten(2).square().mean(-1).sqrt().clamp_min(1e-12)
    wanted = batch_ops.to_device(np.asarray(rms, dtype=np.float64), noise.device, noise.dtype)
    return smoothed * (wanted.view(batch, 1) / current).view(batch, 3, 1, 1, 1)


class _BrainIntensity:
    """An intensity step: fires with ``prob``, seeds its MONAI transform from the call's
    generator and changes the image inside the brain mask only (the label never)."""

    prob: float
    _transform: Any = None  # a MONAI transform seeded from the generator, or None (drawn in apply)
    min_brain_voxels = 1

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if rng.random() >= self.prob:
            return image, label
        mask = _brain_mask(image)
        if int(mask.sum()) < self.min_brain_voxels:
            return image, label
        if self._transform is not None:
            self._transform.set_random_state(seed=_seed(rng))
            return self.apply(image, mask), label
        return self.apply(image, mask, rng), label

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The change inside ``mask``; ``rng`` for steps that draw their own parameters."""
        raise NotImplementedError

    def batch(self, image: torch.Tensor, label: torch.Tensor,
              random: BatchRandom) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = random.fires(self.prob, len(image))
        if not chosen:
            return image, label
        return _on_patches(chosen, image, label, lambda part: self._changed(part, random), moves_labels=False)

    def _changed(self, part: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        mask = batch_ops.brain_masks(part)
        enough = mask.flatten(1).sum(1) >= self.min_brain_voxels  # as the patch path, which skips the others
        return torch.where(enough.view(-1, 1, 1, 1, 1), self.apply_batch(part, mask, random), part)

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        """The change inside ``mask`` (``(B, 1, ...)``) of every patch of ``image``."""
        raise NotImplementedError


class Gamma(_BrainIntensity):
    """Gamma contrast change inside the brain mask (nnU-Net's, via MONAI RandAdjustContrast).

    Brain voxels of a channel are rescaled to [0, 1] by their min and max, raised to a power
    drawn from ``gamma`` and mapped back, so negative z-scores are handled; with ``retain_stats``
    their mean and std are then restored (the channel stays z-scored). The background stays 0.
    ``per_channel`` draws one gamma per channel (modalities vary independently)."""

    def __init__(self, prob: float = 0.3, gamma: Sequence[float] = (0.7, 1.5), retain_stats: bool = True,
                 per_channel: bool = True) -> None:
        self.prob = _probability(prob)
        self.gamma = _range("gamma", gamma, low=0.0)
        self.retain_stats = bool(retain_stats)
        self.per_channel = bool(per_channel)
        self._transform = RandAdjustContrast(prob=1.0, gamma=self.gamma, retain_stats=self.retain_stats)

    min_brain_voxels = 2  # a min-max rescale needs two values

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        out = image.clone()
        for c in range(image.shape[0]):
            values = image[c][mask]
            if float(values.max() - values.min()) <= 0:
                continue
            adjusted = self._transform(values[None], randomize=self.per_channel or c == 0)
            out[c][mask] = _plain(adjusted)[0].to(image.dtype)
        return out

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        batch, channels = image.shape[:2]
        gammas = random.rng.uniform(*self.gamma, (batch, channels if self.per_channel else 1))
        return self.gamma_batch(image, mask, np.repeat(gammas, channels // gammas.shape[1], axis=1),
                                self.retain_stats)

    @staticmethod
    def gamma_batch(image: torch.Tensor, mask: torch.Tensor, gammas: np.ndarray, retain_stats: bool) -> torch.Tensor:
        """MONAI's AdjustContrast of each channel's brain voxels with ``gammas[b, c]``; channels
        whose brain voxels are all equal stay unchanged."""
        stats = batch_ops.masked_channel_stats(image, mask)
        shape = (*image.shape[:2], 1, 1, 1)
        low, span = stats["min"].view(shape), (stats["max"] - stats["min"]).view(shape)
        power = batch_ops.to_device(gammas, image.device, image.dtype).view(shape)
        adjusted = ((image - low) / (span + 1e-7)).clamp_min(0.0) ** power * span + low
        if retain_stats:
            new = batch_ops.masked_channel_stats(adjusted, mask)
            adjusted = ((adjusted - new["mean"].view(shape)) / (new["std"].view(shape) + 1e-8)
                        * stats["std"].view(shape) + stats["mean"].view(shape))
        return torch.where(mask & (span > 0), adjusted, image)


class BiasField(_BrainIntensity):
    """Smooth multiplicative intensity inhomogeneity (MONAI RandBiasField) inside the brain mask.

    The field is ``exp`` of a Legendre polynomial of ``degree`` over the patch, coefficients drawn
    from ``coeff_range``. A bias multiplies the raw signal, but z-scored values are negative
    below the mean, where multiplying by a field > 1 would darken them; so each channel's brain
    voxels are shifted to start at 0 (their minimum), multiplied, and shifted back.
    The field spans each patch whatever its size, so it is kept mild: with the default
    ``coeff_range`` a patch's field typically runs from about 0.83 to 1.22. (MONAI's default
    ``(0, 0.1)`` has only positive coefficients: every patch gets a field rising towards the same
    corner, typically from 0.74 to 2.7.)"""

    def __init__(self, prob: float = 0.3, degree: int = 3, coeff_range: Sequence[float] = (-0.05, 0.05)) -> None:
        self.prob = _probability(prob)
        self.degree = int(degree)
        if self.degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree!r}")
        self.coeff_range = _range("coeff_range", coeff_range)
        self._transform = RandBiasField(prob=1.0, degree=self.degree, coeff_range=self.coeff_range)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        floor = torch.stack([image[c][mask].min() for c in range(image.shape[0])]).view(-1, 1, 1, 1)
        shifted = torch.where(mask, image - floor, torch.zeros((), dtype=image.dtype))
        biased = _plain(self._transform(shifted)).to(image.dtype)
        return torch.where(mask, biased + floor, torch.zeros((), dtype=image.dtype))

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        terms = (self.degree + 1) * (self.degree + 2) * (self.degree + 3) // 6
        return self.bias_batch(image, mask, random.rng.uniform(*self.coeff_range, (len(image), terms)), self.degree)

    @staticmethod
    def bias_batch(image: torch.Tensor, mask: torch.Tensor, coefficients: np.ndarray, degree: int) -> torch.Tensor:
        """Each patch's brain voxels, shifted to start at 0 per channel, times ``exp`` of its
        Legendre field (MONAI RandBiasField's, one field for all channels), shifted back."""
        floor = batch_ops.masked_channel_stats(image, mask)["min"].view(*image.shape[:2], 1, 1, 1)
        field = torch.exp(batch_ops.legendre_fields(image.shape[2:], coefficients, degree, image.device))
        biased = (image - floor) * field[:, None] + floor
        return torch.where(mask, biased, torch.zeros((), dtype=image.dtype))


class Noise(_BrainIntensity):
    """Additive Gaussian noise inside the brain mask (MONAI RandGaussianNoise).

    ``std`` is in z-score units (the brain's intensity std is 1). As in MONAI, with
    ``sample_std`` the std of each patch is drawn from ``[0, std]``; without, it is ``std``."""

    def __init__(self, prob: float = 0.15, std: float = 0.1, sample_std: bool = True) -> None:
        self.prob = _probability(prob)
        self.std = float(std)
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {std!r}")
        self.sample_std = bool(sample_std)
        self._transform = RandGaussianNoise(prob=1.0, mean=0.0, std=self.std, sample_std=self.sample_std)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        out = image.clone()
        out[:, mask] = _plain(self._transform(image[:, mask])).to(image.dtype)
        return out

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        stds = random.rng.uniform(0.0, self.std, len(image)) if self.sample_std else np.full(len(image), self.std)
        noise = torch.randn(image.shape, generator=random.noise, device=image.device, dtype=image.dtype)
        scale = batch_ops.to_device(stds, image.device, image.dtype).view(-1, 1, 1, 1, 1)
        return torch.where(mask, image + noise * scale, image)


def gaussian_blur(volume: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """``volume`` (D, H, W) smoothed by a Gaussian of ``sigma`` voxels along every axis, on the
    volume's own device, edges extended (SciPy's ``nearest``), truncated at ``truncate`` sigma."""
    return blur_axes(volume, [sigma] * 3, truncate)


class Blur(_BrainIntensity):
    """Gaussian blur of a channel (nnU-Net: sigma 0.5-1 voxel, each channel with probability
    ``per_channel_prob``); the background is set back to 0."""

    def __init__(self, prob: float = 0.2, sigma: Sequence[float] = (0.5, 1.0), per_channel_prob: float = 0.5) -> None:
        self.prob = _probability(prob)
        self.sigma = _range("sigma", sigma, low=0.0)
        self.per_channel_prob = _probability(per_channel_prob)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        out = image.clone()
        for c in range(image.shape[0]):
            if rng.random() < self.per_channel_prob:
                out[c] = torch.where(mask, gaussian_blur(image[c], float(rng.uniform(*self.sigma))), out[c])
        return out

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        pairs = random.channels(self.per_channel_prob, *image.shape[:2])
        return self.blur_batch(image, mask, pairs, random.rng.uniform(*self.sigma, len(pairs)))

    @staticmethod
    def blur_batch(image: torch.Tensor, mask: torch.Tensor, pairs: Sequence[tuple[int, int]],
                   sigmas: Sequence[float]) -> torch.Tensor:
        """The channels ``pairs`` ((patch, channel)) blurred by their ``sigmas`` in one grouped
        convolution (edges extended), inside the brain mask."""
        if not pairs:
            return image
        patches, channels = (_indices(axis, image.device) for axis in zip(*pairs, strict=True))
        blurred = batch_ops.blur(image[patches, channels], [[s] * 3 for s in sigmas])
        out = image.clone()
        out[patches, channels] = torch.where(mask[patches, 0], blurred, image[patches, channels])
        return out


class Brightness(_BrainIntensity):
    """Multiplicative brightness: a channel's brain voxels times a factor drawn from ``factor``
    (nnU-Net: 0.75-1.25)."""

    def __init__(self, prob: float = 0.15, factor: Sequence[float] = (0.75, 1.25)) -> None:
        self.prob = _probability(prob)
        self.factor = _range("factor", factor, low=0.0)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        factors = torch.tensor(rng.uniform(*self.factor, size=image.shape[0]), dtype=image.dtype,
                               device=image.device).view(-1, 1, 1, 1)
        return torch.where(mask, image * factors, image)

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        factors = batch_ops.to_device(random.rng.uniform(*self.factor, image.shape[:2]), image.device, image.dtype)
        return torch.where(mask, image * factors.view(*image.shape[:2], 1, 1, 1), image)


class Contrast(_BrainIntensity):
    """Contrast around a channel's brain mean by a factor drawn from ``factor`` (nnU-Net:
    0.75-1.25), clipped to the channel's former brain range (nnU-Net's ``preserve_range``)."""

    def __init__(self, prob: float = 0.15, factor: Sequence[float] = (0.75, 1.25)) -> None:
        self.prob = _probability(prob)
        self.factor = _range("factor", factor, low=0.0)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        out = image.clone()
        for c in range(image.shape[0]):
            values = image[c][mask]
            mean, low, high = values.mean(), values.min(), values.max()
            out[c][mask] = ((values - mean) * float(rng.uniform(*self.factor)) + mean).clamp(low, high)
        return out

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        return self.contrast_batch(image, mask, random.rng.uniform(*self.factor, image.shape[:2]))

    @staticmethod
    def contrast_batch(image: torch.Tensor, mask: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
        """Each channel's brain voxels scaled by ``factors[b, c]`` around their mean, clipped to
        their former range."""
        stats = batch_ops.masked_channel_stats(image, mask)
        shape = (*image.shape[:2], 1, 1, 1)
        mean = stats["mean"].view(shape)
        factor = batch_ops.to_device(factors, image.device, image.dtype).view(shape)
        scaled = torch.clamp((image - mean) * factor + mean, stats["min"].view(shape), stats["max"].view(shape))
        return torch.where(mask, scaled, image)


class LowResolution(_BrainIntensity):
    """Simulated low resolution: a channel shrunk by a zoom drawn from ``zoom`` (nearest
    neighbour) and brought back to size (trilinear), as nnU-Net's (0.5-1, each channel with
    probability ``per_channel_prob``); the background is set back to 0."""

    def __init__(self, prob: float = 0.25, zoom: Sequence[float] = (0.5, 1.0), per_channel_prob: float = 0.5) -> None:
        self.prob = _probability(prob)
        self.zoom = _range("zoom", zoom, low=0.0)
        if not 0 < self.zoom[0] <= self.zoom[1] <= 1:
            raise ValueError(f"zoom must lie in (0, 1], got {zoom!r}")
        self.per_channel_prob = _probability(per_channel_prob)

    def apply(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        out = image.clone()
        shape = image.shape[1:]
        for c in range(image.shape[0]):
            if rng.random() < self.per_channel_prob:
                zoom = rng.uniform(*self.zoom)
                small = [max(1, round(s * zoom)) for s in shape]
                down = F.interpolate(image[c][None, None], size=small, mode="nearest")
                up = F.interpolate(down, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]
                out[c] = torch.where(mask, up, out[c])
        return out

    def apply_batch(self, image: torch.Tensor, mask: torch.Tensor, random: BatchRandom) -> torch.Tensor:
        pairs = random.channels(self.per_channel_prob, *image.shape[:2])
        return self.low_resolution_batch(image, mask, pairs, random.rng.uniform(*self.zoom, len(pairs)))

    @staticmethod
    def low_resolution_batch(image: torch.Tensor, mask: torch.Tensor, pairs: Sequence[tuple[int, int]],
                             zooms: Sequence[float]) -> torch.Tensor:
        """The channels ``pairs`` ((patch, channel)) shrunk by their ``zooms`` (nearest) and
        brought back (trilinear), inside the brain mask. Each zoom is a grid of its own, so this
        is a short loop of device calls (no synchronisation)."""
        out = image.clone()
        shape = tuple(image.shape[2:])
        for (b, c), zoom in zip(pairs, zooms, strict=True):
            small = [max(1, round(s * zoom)) for s in shape]
            down = F.interpolate(image[b, c][None, None], size=small, mode="nearest")
            up = F.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0, 0]
            out[b, c] = torch.where(mask[b, 0], up, image[b, c])
        return out


_STEPS: dict[str, type] = {
    "flip": Flip, "affine": Affine, "elastic": Elastic, "gamma": Gamma, "bias_field": BiasField, "noise": Noise,
    "blur": Blur, "brightness": Brightness, "contrast": Contrast, "low_resolution": LowResolution,
    "labels_to_image": LabelsToImage,  # SynthSeg's generator: the image made from the label patch
}


class Augmentation:
    """A list of augmentation steps applied in order; see the module docstring."""

    def __init__(self, steps: Sequence[Any]) -> None:
        self.steps = list(steps)

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one patch: image (C, D, H, W) float32, label (1, D, H, W) int64 (-1 = ignored).

        Returns plain tensors of the same shapes (one image channel after ``labels_to_image``) and
        dtypes; all randomness comes from ``rng``."""
        image = torch.as_tensor(image)
        label = torch.as_tensor(label)
        if image.ndim != 4 or label.ndim != 4 or label.shape[0] != 1 or image.shape[1:] != label.shape[1:]:
            raise ValueError(f"expected image (C, D, H, W) and label (1, D, H, W), got {tuple(image.shape)} "
                             f"and {tuple(label.shape)}")
        image_dtype, label_dtype = image.dtype, label.dtype
        image = _plain(image).float()
        label = _plain(label)
        for step in self.steps:
            image, label = step(image, label, rng)
        return image.to(image_dtype).contiguous(), label.to(label_dtype).contiguous()

    def batch(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator,
              classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch on its own device: image (B, C, D, H, W), label (B, 1, D, H, W) int64.

        Each step is one batched call over the patches it fires for (see the module docstring).
        ``classes``: the label space's class count (``labels_to_image`` draws an intensity per
        class; without it, it reads the batch's largest class back once). All randomness comes
        from ``rng``; the inputs are not modified."""
        image = torch.as_tensor(image)
        label = torch.as_tensor(label)
        if image.ndim != 5 or label.ndim != 5 or label.shape[1] != 1 or image.shape[0] != label.shape[0] \
                or image.shape[2:] != label.shape[2:]:
            raise ValueError(f"expected images (B, C, D, H, W) and labels (B, 1, D, H, W), got {tuple(image.shape)} "
                             f"and {tuple(label.shape)}")
        image_dtype, label_dtype = image.dtype, label.dtype
        image = _plain(image).float()
        label = _plain(label)
        random = BatchRandom(rng, image.device, classes)
        with torch.autocast(image.device.type, enabled=False):  # float32 fields and filters, whatever the caller's
            for step in self.steps:
                image, label = step.batch(image, label, random)
        return image.to(image_dtype).contiguous(), label.to(label_dtype).contiguous()

    def __repr__(self) -> str:
        return f"Augmentation({[type(s).__name__ for s in self.steps]})"

    @property
    def generates_images(self) -> bool:
        """Whether the training images are made from the label maps (``labels_to_image``): the
        model then takes one channel of any contrast."""
        return any(isinstance(step, LabelsToImage) for step in self.steps)

    @property
    def zero_background(self) -> bool:
        """Whether the images made from the label maps keep the background (class 0) at 0, as a
        skull-stripped scan's: the model then expects scans with such a background."""
        return any(isinstance(step, LabelsToImage) and step.background == "zero" for step in self.steps)


def _options(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def build_augmentation(specs: Sequence[Mapping[str, Any]]) -> Augmentation | None:
    """The augmentation a config asks for, or None for an empty list (no work per patch).

    Each spec is ``{"name": <one of AUGMENTATIONS or GENERATORS>, **options}``; an unknown name or option, or a
    bad value, raises ValueError naming the spec and what is allowed, so config typos fail at
    start-up rather than silently training without the augmentation."""
    if isinstance(specs, Mapping | str):
        raise ValueError(f"augmentation must be a list of specs like {{'name': 'flip'}}, got {specs!r}")
    steps = []
    for index, spec in enumerate(specs):
        where = f"augmentation spec #{index} {dict(spec) if isinstance(spec, Mapping) else spec!r}"
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"{where}: each spec must be a mapping with a 'name' among "
                             f"{', '.join(AUGMENTATIONS + GENERATORS)}")
        name = spec["name"]
        if name not in _STEPS:
            allowed = ", ".join(AUGMENTATIONS + GENERATORS)
            raise ValueError(f"{where}: unknown augmentation {name!r}; allowed: {allowed}")
        cls = _STEPS[name]
        options = {k: v for k, v in spec.items() if k != "name"}
        allowed = _options(cls)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))} for {name!r}; "
                             f"allowed: {', '.join(allowed)}")
        try:
            steps.append(cls(**options))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from error
    return Augmentation(steps) if steps else None
