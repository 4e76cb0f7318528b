"""The one prediction path: checkpoint + scans -> segmentations in the scans' own space.

    from core.segmenter import Segmenter
    segmenter = Segmenter.from_checkpoint("runs/demo/latest/checkpoints/best.ckpt")
    segmenter.segment(["subject-9-T1.hdr", "subject-9-T2.hdr"]).to_filename("subject-9_seg.nii.gz")

``predict.py``, ``train.py predict`` (through the LightningModule's :class:`Segmenter` of its
own network) and notebooks all go through :class:`Segmenter`: the checkpoint's preprocessing,
Gaussian-weighted sliding windows, optional mirroring, precision, the label space's class map;
the files are written by :class:`core.export.PredictionFolder`; the checkpoint is read by
:mod:`core.checkpoint`.

The raw network (``segmenter.network``, or ``SegmentationModule.forward``) stays available
for tensors, but expects *preprocessed* input (RAS+, the checkpoint's spacing, z-scored over
brain voxels): feeding it raw intensities gives a wrong segmentation without any error.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from core.checkpoint import (
    MODALITY_PROFILES,
    TRAINING_SPACING,
    checkpoint_identity,
    datamodule_record,
    model_hparams,
    network_weights,
    read_checkpoint,
)
from core.export import OUR_NAMES, OutputNames, PredictionFolder, Segmentation, output_identity, with_brain_masks
from core.inference import autocast_at, emulated_precision, mean_over_flips, sliding_window_logits
from core.io import BadInputs, DataError, DataWarning, image_stem
from core.labels import LabelSpace
from core.modality_profiles import ANY_CONTRAST, ModalityProfiles
from core.postprocessing import class_groups, keep_largest
from core.training_spacing import TrainingSpacing
from core.volumes import PreprocessingSettings, Subject, Volume, load_subject
from networks import build_network
from networks.outputs import network_border


def subject_from_files(files: Sequence[str | Path], modalities: Sequence[str], source: str,
                       subject_id: str | None = None, brain_mask: str | Path | None = None) -> Subject:
    """One subject from its modality files, given in the model's modality order. Its id (the
    output's name) defaults to what the file names share, up to a separator
    (``subject-4-T1.hdr`` + ``subject-4-T2.hdr`` -> ``subject-4``). ``brain_mask``: its outside set
    to 0 in every image (:class:`~core.volumes.Subject`), for scans whose background is not."""
    files = [Path(f) for f in files]
    if modalities and len(files) != len(modalities):
        raise DataError(f"{source}: the model was trained on {len(modalities)} modalities {list(modalities)} "
                        f"(in this order); got {len(files)} files: {[str(f) for f in files]}")
    if subject_id is None:
        stems = [image_stem(f) for f in files]
        shared = os.path.commonprefix(stems)
        if len(stems) > 1 and any(c in shared for c in "-_."):  # cut the shared part of the modality names
            shared = shared[: max(shared.rfind(c) for c in "-_.")]
        subject_id = shared.rstrip("-_.") or stems[0]
    return Subject(subject_id, tuple(files), brain_mask=None if brain_mask is None else Path(brain_mask))


def check_preprocessed(image: torch.Tensor, source: str = "model") -> None:
    """Refuse a tensor that cannot be a preprocessed volume (B, M, D, H, W): every channel is
    z-scored over its non-zero (brain) voxels, so their mean is 0 and their spread 1 (a
    volume's mean lies within +-0.5 and its standard deviation within 0.5..2, allowing for
    clipping and resampling). Raw intensities (hundreds, thousands) would give a wrong
    segmentation without any error."""
    if image.ndim != 5:
        raise ValueError(f"{source}: expected a preprocessed batch (B, M, D, H, W), got shape {tuple(image.shape)}")
    for b in range(image.shape[0]):
        for m in range(image.shape[1]):
            channel = image[b, m]
            brain = channel[channel != 0].float()
            if brain.numel() < 2:
                continue
            mean, std = brain.mean().item(), brain.std().item()
            if abs(mean) > 0.5 or not 0.5 <= std <= 2.0:
                raise ValueError(
                    f"{source}: input channel {m} of volume {b} has mean {mean:.3g} and standard deviation "
                    f"{std:.3g} over its non-zero voxels; the network expects volumes preprocessed as in "
                    "training (z-scored: mean 0, deviation 1). Segment scans with Segmenter.segment(files), "
                    "which preprocesses them")


THIN_BY = 4  # an axis with fewer voxels than a quarter of the training patch's is a slab, not a volume


def thin_axes_problem(shape: Sequence[int], window: Sequence[int]) -> str | None:
    """Why a volume of ``shape`` (on the network's grid) is too thin for a network trained on
    ``window`` patches (a single slice, a slab of a few), or None; 2D networks (a window of 1
    along an axis) are never."""
    thin = [(axis, int(size), int(side)) for axis, (size, side) in enumerate(zip(shape, window, strict=True))
            if size * THIN_BY < side]
    if not thin:
        return None
    said = ", ".join(f"{size} voxel{'s' * (size != 1)} along axis {axis}" for axis, size, _ in thin)
    patch = "x".join(str(int(side)) for side in window)
    return (f"{said} on the network's grid, where the model was trained on {patch} patches: a single slice or "
            "a thin slab lacks the 3D context the network learned and is segmented worse; give the whole volume")


def input_problems(image: np.ndarray, affine: np.ndarray | None, names: Sequence[str],
                   profiles: ModalityProfiles | None, spacing: TrainingSpacing | None,
                   window: Sequence[int] | None = None) -> list[str]:
    """What sets a preprocessed image (M, ...) on the grid ``affine``, its channels read from
    ``names``, apart from the training scans (their ``profiles`` and ``spacing``, either None when
    not recorded, and the training ``window``): channels swapped or repeated, a background not at
    0, voxels of another size, a slice or slab where volumes were learned. Such an image is
    segmented worse without an error: prediction, validation and test say it."""
    found = []
    if window is not None and (problem := thin_axes_problem(image.shape[1:], window)):
        found.append(problem)
    if profiles is not None:
        names = [str(n) for n in names]
        order = f"; are the modalities in the order {', '.join(profiles.modalities)}?" if len(image) > 1 else ""
        found += [problem + order for problem in profiles.problems(image, names)]
        found += profiles.background_problems(image, names)
    if spacing is not None and affine is not None and (problem := spacing.problem(affine)):
        found.append(problem)
    return found


class ScanSegmenter(ABC):
    """Scans -> segmentations, for anything that gives class or region probabilities of
    preprocessed volumes (:class:`Segmenter`, one network; :class:`Ensemble`, several).

    Subclasses provide ``labels``, ``modalities``, ``preprocessing``, ``profiles``,
    ``training_spacing``, ``source``,
    ``datamodule`` (the training DataModule's record, to read folders in its layout) and
    :meth:`probabilities`."""

    labels: LabelSpace
    modalities: tuple[str, ...]
    preprocessing: PreprocessingSettings
    profiles: ModalityProfiles | None
    training_spacing: TrainingSpacing | None
    source: str
    datamodule: dict[str, Any] | None
    keep_largest: tuple[str, ...] = ()  # structures cut to their largest component (:meth:`keep_largest_of`)

    def keep_largest_of(self, names: Sequence[str]) -> None:
        """From now on keep only the largest connected component of these structures (class
        names, or ``foreground`` for all as one) in every segmentation: nnU-Net's
        postprocessing, for the structures ``evaluate.py --keep-largest-gains`` found it helps
        (:mod:`core.postprocessing`). Checked against the label space now."""
        class_groups(self.labels, names)
        self.keep_largest = tuple(names)

    @abstractmethod
    def probabilities(self, image: torch.Tensor, flips: bool = False) -> torch.Tensor:
        """Class (softmax) or region (sigmoid) probabilities (B, C, ...) of preprocessed volumes
        (B, M, ...); with ``flips``, the mean over the 8 mirrorings."""

    @property
    @abstractmethod
    def training_window(self) -> tuple[int, ...]:
        """The patches the checkpoint learned on (the smallest of an ensemble's, axis by axis),
        whatever inference window it was given: what the thin-slab check compares a volume with,
        as validation and test do."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """How it segments (checkpoints, windows, precision), for the log of prediction runs."""

    def subject(self, files: Sequence[str | Path], subject_id: str | None = None,
                brain_mask: str | Path | None = None) -> Subject:
        """One subject from its modality files, in the model's modality order (see :func:`subject_from_files`)."""
        return subject_from_files(files, self.modalities, self.source, subject_id, brain_mask)

    def segment_volume(self, volume: Volume, flips: bool = False, probabilities: bool = False,
                       problems: Sequence[str] = ()) -> Segmentation:
        """A preprocessed volume -> its segmentation on the scan's own grid (``problems``: what its
        input check said, kept with it for the prediction log)."""
        image = torch.from_numpy(np.asarray(volume.image, dtype=np.float32))[None]
        probs = self.probabilities(image, flips)
        classes = self.labels.classes_from_probabilities(probs)[0, 0].cpu().numpy()
        if self.keep_largest:  # the probabilities stay the network's, as nnU-Net keeps them
            classes = keep_largest(classes, class_groups(self.labels, self.keep_largest))
        return Segmentation.from_network_grid(
            volume.subject_id, classes, self.labels, volume.affine, volume.original_affine, volume.original_shape,
            probs[0].cpu().numpy() if probabilities else None, note=self.note, problems=problems)

    @property
    def any_contrast(self) -> bool:
        """A model trained on images made from label maps: one scan of any contrast."""
        return tuple(self.modalities) == (ANY_CONTRAST,)

    @property
    def note(self) -> str:
        """What the outputs' headers say of the model after the prediction mark."""
        return "any-contrast model" if self.any_contrast else ""

    def check_input(self, image: np.ndarray, affine: np.ndarray | None, names: Sequence[str], subject_id: str
                    ) -> list[str]:
        """Warn (:class:`~core.io.DataWarning`, naming the subject and files) of each of the
        :func:`input_problems` of a preprocessed image; returns them."""
        problems = input_problems(image, affine, names, self.profiles, self.training_spacing,
                                  self.training_window)
        for problem in problems:
            warnings.warn(f"{subject_id}: {problem}", DataWarning, stacklevel=2)
        return problems

    def segment_subject(self, subject: Subject, flips: bool = False, probabilities: bool = False) -> Segmentation:
        """Read, preprocess (as in training), check and segment one subject."""
        volume = load_subject(subject, None, self.preprocessing)
        problems = self.check_input(volume.image, volume.affine, subject.images, subject.subject_id)
        return self.segment_volume(volume, flips, probabilities, problems)

    def segment(self, files: Sequence[str | Path], flips: bool = False, subject_id: str | None = None,
                brain_mask: str | Path | None = None) -> nib.Nifti1Image:
        """One subject's modality files -> its segmentation as a NIfTI image in the scan's own
        space and the dataset's label values (what ``predict.py`` writes); ``brain_mask``: the
        voxels outside it set to 0 first, for scans whose background is not."""
        made_with = output_identity(with_brain_masks(self.record(flips), brain_mask is not None))
        return self.segment_subject(self.subject(files, subject_id, brain_mask), flips).image(made_with)

    def record(self, flips: bool = False, probabilities: bool = False) -> dict[str, Any]:
        """How this segmenter segments: its checkpoint(s) and settings, as a prediction folder's
        log records them and (the part that changes voxels) its images carry."""
        return {**self.settings(), "flips": flips, "probabilities": probabilities,
                **({"keep_largest": list(self.keep_largest)} if self.keep_largest else {}),
                **({"resample_to_first": True} if self.preprocessing.resample_to_first else {}),
                **({"target_spacing": list(self.preprocessing.target_spacing)}
                   if self.preprocessing.target_spacing else {})}

    def segment_to_folder(self, subjects: Sequence[Subject], output: str | Path, flips: bool = False,
                          probabilities: bool = False, overwrite: bool = False, progress: bool = True,
                          names: OutputNames = OUR_NAMES, continuing: bool = False) -> list[Path]:
        """Segment ``subjects`` into ``output`` (see :class:`PredictionFolder`: nothing replaced
        that must not be, checked before any work), named by ``names``; returns the segmentation
        files written. A subject with bad input does not stop the others: they are segmented and
        the folder's tables and log written, then the problems are raised together.
        ``continuing``: after an interrupted run, the subjects it wrote whole with this model and
        these settings are kept, not segmented again (their volumes still counted)."""
        folder = PredictionFolder.for_subjects(output, subjects, self.labels.num_outputs, probabilities, overwrite,
                                               names, record=self.record(flips, probabilities), continuing=continuing)
        for subject_id in folder.finished:
            folder.keep(subject_id, self.labels)
        if continuing and progress:
            print(folder.continuing_note(len(subjects)))
        rest = [subject for subject in subjects if subject.subject_id not in folder.finished]
        written, bad = [], BadInputs(len(rest))
        bar = tqdm(rest, desc="segmenting", unit="subject", disable=None if progress else True)
        for subject in bar:
            bar.set_postfix_str(subject.subject_id)
            segmentation = bad.attempt(lambda s=subject: self.segment_subject(s, flips, probabilities))
            if segmentation is None:
                continue
            written.append(folder.write(segmentation))
            if progress:
                tqdm.write(f"wrote {written[-1]}")
        folder.close()
        bad.raise_any()
        return written


@dataclass
class Segmenter(ScanSegmenter):
    """A network with what it needs to segment scans: its label space, the modalities it was
    trained on (in order), the preprocessing, and the sliding-window settings.

    Args:
        network: any registered network (plain ``nn.Module``), already on its device.
        labels: the label space it was trained with.
        roi_size: sliding-window size.
        modalities: the input channels' names, in order (to check and name inputs).
        preprocessing: what happens to a scan before the network (from the checkpoint).
        sw_batch_size, sw_overlap: windows per forward pass, overlap of neighbouring windows (the
            model's own names).
        source: where it came from (a checkpoint path), for error messages.
        datamodule: the checkpoint's DataModule record (``class_path``, ``init_args``), which
            tells how folders in the training layout are read (``datamodules.subjects_in_folder``).
        profiles: the training scans' intensity profile per modality: inputs that look swapped
            or repeated get a warning (:mod:`core.modality_profiles`).
        training_spacing: the training volumes' voxel spacing: a scan on a grid of another one
            gets a warning (:mod:`core.training_spacing`).
    """

    network: nn.Module
    labels: LabelSpace
    roi_size: tuple[int, int, int]
    modalities: tuple[str, ...] = ()
    preprocessing: PreprocessingSettings = field(default_factory=PreprocessingSettings)
    sw_batch_size: int = 2
    sw_overlap: float = 0.5
    source: str = "model"
    datamodule: dict[str, Any] | None = None
    profiles: ModalityProfiles | None = None
    training_spacing: TrainingSpacing | None = None
    progress: bool = False  # a bar over each volume's windows (predict.py in a terminal)
    window_scale: int = 1  # windows this many times the checkpoint's per side (capped by the volume)
    precision: str = "32"  # "bf16": the network under bfloat16 autocast (core.inference.fast_bf16)
    patch_size: tuple[int, ...] | None = None  # the training patch, where roi_size is another window

    @property
    def training_window(self) -> tuple[int, ...]:
        return tuple(self.patch_size or self.roi_size)

    def settings(self) -> dict[str, Any]:
        return {**checkpoint_identity(self.source), "window": list(self.roi_size),
                "window_scale": self.window_scale, "sw_overlap": self.sw_overlap, "sw_batch_size": self.sw_batch_size,
                "precision": self.precision}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        sw_overlap: float | None = None, sw_batch_size: int | None = None,
                        window_scale: int | None = None, progress: bool = False, precision: str = "32") -> Segmenter:
        """Everything from the checkpoint alone: network, label space, modalities,
        preprocessing (the DataModule's saved arguments) and windows (the model's; a setting
        given here wins)."""
        checkpoint = read_checkpoint(path)
        hparams = model_hparams(checkpoint)
        labels = LabelSpace.from_dict(hparams["label_space"])
        network = build_network(hparams["network"], channels_last=hparams.get("channels_last"),
                                in_channels=int(hparams["in_channels"]),
                                num_classes=labels.num_outputs, **(hparams.get("network_kwargs") or {}))
        try:
            network.load_state_dict(network_weights(checkpoint))
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise DataError(f"{path}: weights do not fit {hparams['network']} ({reason})") from error
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        problem = emulated_precision(device, precision)
        if problem:
            warnings.warn(f"{problem}; segment in float32 (predict.py --precision 32)", DataWarning, stacklevel=2)
        datamodule = datamodule_record(checkpoint)
        return cls(
            network=network.to(device).eval(), labels=labels,
            roi_size=tuple(int(r) for r in (hparams.get("inference_roi_size") or hparams["roi_size"])),
            modalities=tuple(hparams.get("modalities") or ()),
            preprocessing=PreprocessingSettings.from_hparams(datamodule["init_args"]),
            sw_batch_size=int(sw_batch_size or hparams.get("sw_batch_size") or 2),
            sw_overlap=float(hparams.get("sw_overlap", 0.5) if sw_overlap is None else sw_overlap),
            source=str(path),
            datamodule=datamodule,
            profiles=ModalityProfiles.from_dict(checkpoint.get(MODALITY_PROFILES)),
            training_spacing=TrainingSpacing.from_dict(checkpoint.get(TRAINING_SPACING)),
            progress=progress,
            window_scale=int(hparams.get("window_scale") or 1 if window_scale is None else window_scale),
            precision=precision,
            patch_size=tuple(int(r) for r in hparams["roi_size"]),
        )

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # Tensors (preprocessed) -> logits, probabilities.
    def window(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The sliding window for a volume of ``shape``: the checkpoint's, or ``window_scale``
        times it per side but no larger than the volume rounded up to whole checkpoint windows
        (an integer multiple keeps every size the network must divide by)."""
        if self.window_scale <= 1:
            return tuple(self.roi_size)
        return tuple(min(r * self.window_scale, -(-int(n) // r) * r) for r, n in zip(self.roi_size, shape, strict=True))

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, ...) of preprocessed whole volumes (B, M, ...) by sliding windows, at
        this segmenter's precision whatever autocast surrounds it (a Trainer's)."""
        with autocast_at(image.device.type, self.precision):
            return sliding_window_logits(self.network, image, self.window(image.shape[2:]), self.sw_batch_size,
                                         self.sw_overlap,
                                         border=network_border(self.network), name=type(self.network).__name__,
                                         progress=self.progress)

    def probabilities(self, image: torch.Tensor, flips: bool = False) -> torch.Tensor:
        """Class (softmax) or region (sigmoid) probabilities (B, C, ...) of preprocessed volumes;
        with ``flips``, the mean over the 8 mirrorings (test-time augmentation). Raw scans are
        refused (:func:`check_preprocessed`): :meth:`segment` takes files."""
        check_preprocessed(image, self.source)
        image = image.to(self.device)
        return mean_over_flips(lambda x: self.labels.probabilities(self.logits(x).float()), image, flips,
                                    self.precision)


def _describe(segmenter: Segmenter) -> dict[str, Any]:
    """What members of an ensemble must share: the input channels, the classes and how scans
    are prepared for the network."""
    return {"modalities": list(segmenter.modalities), "label space": segmenter.labels.to_dict(),
            "preprocessing": asdict(segmenter.preprocessing)}


def _differences(this: Any, that: Any) -> str:
    """What differs between two descriptions: the differing entries of two dicts, else both."""
    if isinstance(this, dict) and isinstance(that, dict):
        return "; ".join(f"{key} {this.get(key)!r} vs {that.get(key)!r}" for key in sorted(set(this) | set(that))
                         if this.get(key) != that.get(key))
    return f"{this} vs {that}"


@dataclass
class Ensemble(ScanSegmenter):
    """Several networks trained for the same task (the folds of a cross-validation, or seeds):
    their probabilities averaged, then one class map (nnU-Net's ``-f 0 1 2 3 4``).

    Members must share modalities (names and order), label space and preprocessing; a
    checkpoint that differs in any is refused, naming both files."""

    members: tuple[Segmenter, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        first = _describe(self.members[0])
        for member in self.members[1:]:
            for key, value in _describe(member).items():
                if value != first[key]:
                    raise DataError(f"{member.source}: its {key} differs from {self.members[0].source}'s "
                                    f"({_differences(value, first[key])}); an ensemble averages models of one task")
        lead = self.members[0]
        self.labels, self.modalities, self.preprocessing = lead.labels, lead.modalities, lead.preprocessing
        self.profiles, self.training_spacing, self.datamodule = lead.profiles, lead.training_spacing, lead.datamodule
        self.source = " + ".join(m.source for m in self.members)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], device: str | torch.device | None = None,
                         sw_overlap: float | None = None, sw_batch_size: int | None = None,
                         window_scale: int | None = None, progress: bool = False, precision: str = "32") -> Ensemble:
        return cls(tuple(Segmenter.from_checkpoint(p, device, sw_overlap, sw_batch_size, window_scale, progress,
                                                   precision) for p in paths))

    @property
    def training_window(self) -> tuple[int, ...]:
        return tuple(min(sizes) for sizes in zip(*(m.training_window for m in self.members), strict=True))

    def settings(self) -> dict[str, Any]:
        return {"ensemble": [member.settings() for member in self.members]}

    def probabilities(self, image: torch.Tensor, flips: bool = False) -> torch.Tensor:
        """The members' probabilities (each over its own windows and mirrorings), averaged."""
        total = self.members[0].probabilities(image, flips)
        for member in self.members[1:]:
            total += member.probabilities(image, flips).to(total.device)
        return total / len(self.members)


def load_segmenter(checkpoints: str | Path | Sequence[str | Path], device: str | torch.device | None = None,
                   sw_overlap: float | None = None, sw_batch_size: int | None = None,
                   window_scale: int | None = None, progress: bool = False,
                   precision: str = "32") -> Segmenter | Ensemble:
    """A :class:`Segmenter` for one checkpoint, an :class:`Ensemble` of several (window settings
    and precision for every member alike)."""
    paths = [checkpoints] if isinstance(checkpoints, str | Path) else list(checkpoints)
    if len(paths) == 1:
        return Segmenter.from_checkpoint(paths[0], device, sw_overlap, sw_batch_size, window_scale, progress, precision)
    return Ensemble.from_checkpoints(paths, device, sw_overlap, sw_batch_size, window_scale, progress, precision)
