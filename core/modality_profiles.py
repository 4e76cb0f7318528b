"""Per-modality intensity signatures: stored at training, checked at prediction.

A checkpoint trained on (T1, T2) given T2 and T1 segments without complaint and scores nothing
(Dice 0.001 / 0.619 / 0.001 on the demo). Labels are not there to catch it at prediction, and
the prediction itself follows the swapped input, so the signature must come from the images
alone: the shape of each modality's brain-voxel histogram after normalisation, as quantiles.
Z-scoring removes scanner gain and offset but keeps the shape: T1 has a long dark tail (CSF),
T2 a long bright one. On the demo subjects a scan's distance to its own modality's profile is
0.2-1.2 training spreads, to the other modality's 2.1-6.0.

A channel is flagged when it is far from its own modality's profile (beyond what the training
subjects showed) and clearly closer to another's: swapped or repeated modalities get a warning
that names the files; identical channels always do. A channel far beyond every training scan
and like no other modality (another contrast given to a model of one, a label map) is flagged
as unlike them, where at least 5 training subjects give a spread to measure by. Modalities
whose histograms look alike (BraTS' T1 and T1ce) cannot be told apart this way and are not
flagged.

The profile also keeps how much of each training scan is exact zero: the background of a
skull-stripped scan, which normalisation leaves out and keeps at 0. A scan of such a model whose
background is not 0 (interpolation ringing after registration, an intensity offset, a scan not
skull-stripped) is z-scored over the whole field of view and its background given to the network
as tissue: the demo model (CSF/GM/WM Dice 0.86 / 0.95 / 0.95 on its subject 9) scored
0.001 / 0.29 / 0.82 on the same scans with noise of 0.13 % of the brain's mean in the background.
So a channel with far fewer zero voxels than every training scan had gets a warning that says so.
A model of any contrast (images made from label maps, background 0) keeps that share alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ANY_CONTRAST = "any-contrast"  # the one modality of a model trained on images made from label maps
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
MIN_SPREAD = 0.1  # z units: a floor under the training subjects' spread of each quantile
CLOSER_BY = 1.5  # flag a channel another modality's profile explains this many times better
MIN_DISTANCE = 1.5  # ... and only when it is at least this far (in spreads) from its own
UNLIKE_BY = 3.0  # flag a channel this many times farther from its own profile than any training scan was
MIN_UNLIKE = 4.0  # ... and at least this far (in spreads): unlike every training scan, like no other modality
UNLIKE_SUBJECTS = 5  # ... and only where the profile has this many training subjects (a spread to measure by)
PLANE_STRIDE = 4  # every 4th plane: the histogram's shape without reading the whole volume
FLAT = 0.05  # a field of view's faces are background when their spread is below this share of its range


def has_background_frame(channel: np.ndarray) -> bool:
    """Whether the faces of a volume's field of view are flat (their interquartile range under
    :data:`FLAT` of the volume's 1st-99th percentile range): background around the head, at 0 or
    not (ringing, an offset, air). A crop inside the brain has tissue there (measured 0.28-0.36 on
    the demo's subject 9, its ringing and offset scans 0.001 and 0.000), and no background to lose."""
    if channel.ndim != 3:
        return True
    faces = np.concatenate([np.moveaxis(channel, axis, 0)[index].ravel() for axis in range(3) for index in (0, -1)])
    low, high = np.percentile(channel, [1, 99])
    quartiles = np.percentile(faces, [25, 75])
    return bool(quartiles[1] - quartiles[0] <= FLAT * (high - low))


ZERO_BACKGROUND = 0.05  # training scans with at least this fraction of zero voxels have a zero background
BACKGROUND_KEPT = 0.25  # flag a channel with fewer zero voxels than this share of the training scans' fewest


def zero_fraction(channel: np.ndarray) -> float:
    """The fraction of a channel's voxels that are exactly 0 (the background of a skull-stripped scan)."""
    channel = np.asarray(channel)
    return float(np.count_nonzero(channel == 0) / max(channel.size, 1))


def intensity_profile(channel: np.ndarray) -> np.ndarray:
    """Quantiles (:data:`QUANTILES`) of a normalised channel's brain voxels (non-zero; the
    background of a z-scored skull-stripped scan stays exactly 0)."""
    sample = np.asarray(channel[::PLANE_STRIDE])
    values = sample[sample != 0]
    if values.size == 0:
        values = np.asarray(channel)[np.asarray(channel) != 0]
    if values.size == 0:
        return np.zeros(len(QUANTILES))
    return np.quantile(values.astype(np.float64), QUANTILES)


def background_outliers(fractions: Mapping[str, Sequence[float]], modalities: Sequence[str], shown: int = 5
                        ) -> list[str]:
    """Of training subjects (id -> :func:`zero_fraction` of each channel), those whose channel has
    lost the zero background most of the others have (below a quarter of their median, where that
    median is at least 5 %), one line per modality: their background is normalised and trained on
    as brain. Needs 3 subjects for a median to stand for the others."""
    if len(fractions) < 3:
        return []
    ids = list(fractions)
    table = np.asarray([list(fractions[i]) for i in ids], dtype=np.float64)
    found = []
    for channel, modality in enumerate(modalities):
        typical = float(np.median(table[:, channel]))
        odd = [f"{ids[k]} ({table[k, channel]:.1%})" for k in range(len(ids))
               if typical >= ZERO_BACKGROUND and table[k, channel] < BACKGROUND_KEPT * typical]
        if odd:
            more = f" and {len(odd) - shown} more" if len(odd) > shown else ""
            found.append(f"{len(odd)} of {len(ids)} training subjects have almost no {modality} voxels at 0, where "
                         f"the others' median is {typical:.0%} (a skull-stripped scan's background): "
                         f"{', '.join(odd[:shown])}{more}; their background is normalised and learned as brain (a "
                         "scan not skull-stripped, interpolation ringing, an offset): set it to 0 as in the others, "
                         "or leave them out")
    return found


@dataclass(frozen=True)
class ModalityProfiles:
    """The training subjects' profile of each modality: mean and spread of each quantile, and
    the largest distance of a training subject to its own modality (its ``tolerance``)."""

    modalities: tuple[str, ...]
    mean: np.ndarray  # (modalities, quantiles)
    spread: np.ndarray  # (modalities, quantiles)
    tolerance: np.ndarray  # (modalities,)
    zeros: np.ndarray | None = None  # (modalities,): the smallest zero_fraction of a training scan; None: not kept
    subjects: int = 0  # the training subjects profiled (0: not kept)

    @classmethod
    def from_images(cls, images: Iterable[np.ndarray], modalities: Sequence[str],
                    zero_fractions: Sequence[Sequence[float]] | None = None) -> ModalityProfiles:
        """From normalised training images (channels in ``modalities`` order, each (M, ...));
        ``zero_fractions``: their channels' :func:`zero_fraction`, where the caller has them."""
        images = list(images)
        profiles = np.stack([[intensity_profile(channel) for channel in image] for image in images])
        if profiles.shape[1] != len(modalities):
            raise ValueError(f"{profiles.shape[1]} channels for modalities {list(modalities)}")
        mean = profiles.mean(axis=0)
        spread = np.maximum(profiles.std(axis=0), MIN_SPREAD)
        partial = cls(tuple(modalities), mean, spread, np.zeros(len(modalities)))
        tolerance = np.max([np.diag(partial.distances_of(p)) for p in profiles], axis=0)
        if zero_fractions is None:
            zero_fractions = [[zero_fraction(channel) for channel in image] for image in images]
        zeros = np.min(np.asarray(zero_fractions, dtype=np.float64), axis=0)
        return cls(tuple(modalities), mean, spread, tolerance, zeros, len(images))

    @classmethod
    def of_generated_images(cls, labels: Iterable[np.ndarray]) -> ModalityProfiles:
        """For a model trained on images made from label maps whose background (class 0) stays 0:
        no intensity profile to hold a scan of any contrast to, only the share of zero voxels of
        the training volumes' generated images (their class-0 voxels)."""
        zeros = min(zero_fraction(label) for label in labels)
        flat = np.zeros((1, len(QUANTILES)))
        return cls((ANY_CONTRAST,), flat, np.full_like(flat, MIN_SPREAD), np.zeros(1), np.array([zeros]))

    def distances_of(self, profiles: np.ndarray) -> np.ndarray:
        """(channels, modalities): RMS distance, in training spreads, of each channel's profile
        to each modality's."""
        scaled = (profiles[:, None, :] - self.mean[None]) / self.spread[None]
        return np.sqrt((scaled ** 2).mean(axis=-1))

    def distances(self, image: np.ndarray) -> np.ndarray:
        """(channels, modalities) distances of a normalised image (M, ...)."""
        return self.distances_of(np.stack([intensity_profile(channel) for channel in image]))

    def problems(self, image: np.ndarray, files: Sequence[str]) -> list[str]:
        """What looks wrong with the channels of a normalised image given as ``files`` (one per
        modality, in order): identical channels, channels that look like another modality, and
        channels unlike every training scan of theirs (another contrast, a label map; a channel
        without the zero background is said by :meth:`background_problems` instead)."""
        if len(image) != len(self.modalities) or self.modalities == (ANY_CONTRAST,):
            return []
        found = []
        for i in range(len(image)):
            for j in range(i + 1, len(image)):
                if np.array_equal(image[i], image[j]):
                    found.append(f"{files[i]} (given as {self.modalities[i]}) and {files[j]} (given as "
                                 f"{self.modalities[j]}) hold the same image")
        distance = self.distances(image)
        for i, own in enumerate(np.diag(distance)):
            others = [(distance[i, j], j) for j in range(len(self.modalities)) if j != i]
            closest, j = min(others) if others else (np.inf, i)
            if own >= max(MIN_DISTANCE, CLOSER_BY * self.tolerance[i]) and closest * CLOSER_BY <= own:
                found.append(f"{files[i]} (given as {self.modalities[i]}) has the intensities of "
                             f"{self.modalities[j]} (profile distance {closest:.1f} to {self.modalities[j]}, "
                             f"{own:.1f} to {self.modalities[i]}; training scans: at most {self.tolerance[i]:.1f})")
            elif (self.subjects >= UNLIKE_SUBJECTS and own >= max(MIN_UNLIKE, UNLIKE_BY * self.tolerance[i])
                  and self._background_lost(i, image[i]) is None):
                found.append(f"{files[i]} (given as {self.modalities[i]}) has intensities unlike every training "
                             f"scan's {self.modalities[i]} (profile distance {own:.1f}; training scans: at most "
                             f"{self.tolerance[i]:.1f}): another contrast, a label map, or a scan preprocessed "
                             "otherwise is segmented worse")
        return found

    def _background_lost(self, i: int, channel: np.ndarray) -> float | None:
        """The share of zero voxels of channel ``i`` where the training scans of its modality had a
        zero background and it has lost it; None otherwise."""
        if self.zeros is None:
            return None
        share, trained = zero_fraction(channel), float(self.zeros[i])
        lost = trained >= ZERO_BACKGROUND and share < BACKGROUND_KEPT * trained
        return share if lost and has_background_frame(channel) else None

    def background_problems(self, image: np.ndarray, files: Sequence[str]) -> list[str]:
        """Channels of a normalised image (given as ``files``) without the zero background every
        training scan of their modality had."""
        if self.zeros is None or len(image) != len(self.modalities):
            return []
        found = []
        for i, (channel, name, modality, trained) in enumerate(zip(image, files, self.modalities, self.zeros,
                                                                   strict=True)):
            if (share := self._background_lost(i, channel)) is not None:
                found.append(f"{name} (given as {modality}) has {share:.1%} of its voxels at 0, the training scans at "
                             f"least {trained:.0%} (a skull-stripped scan's background): a background that is not 0 "
                             "(a scan not skull-stripped, interpolation ringing, an offset) is z-scored and segmented "
                             "as if it were brain, and the tissue worse; set the voxels outside the brain to 0 as in "
                             "the training scans (a brain mask, which predict.py --brain-mask applies: SynthStrip, "
                             "HD-BET, FSL BET; or a threshold, where registration's interpolation left small values "
                             "there)")
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (checkpoints hold tensors and plain types only)."""
        return {"quantiles": list(QUANTILES), "modalities": list(self.modalities), "mean": self.mean.tolist(),
                "spread": self.spread.tolist(), "tolerance": self.tolerance.tolist(),
                **({} if self.zeros is None else {"zeros": self.zeros.tolist()}), "subjects": self.subjects}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModalityProfiles | None:
        """None for checkpoints without profiles, or with profiles of other quantiles; checkpoints
        written before the zero background was kept have no ``zeros`` nor ``subjects`` (no check of
        either)."""
        if not data or tuple(data.get("quantiles", ())) != QUANTILES:
            return None
        zeros = data.get("zeros")
        return cls(tuple(data["modalities"]), np.asarray(data["mean"], dtype=np.float64),
                   np.asarray(data["spread"], dtype=np.float64), np.asarray(data["tolerance"], dtype=np.float64),
                   None if zeros is None else np.asarray(zeros, dtype=np.float64), int(data.get("subjects", 0)))
