"""The shared DataModule: subject discovery is per dataset, everything else lives here."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from core.export import OUR_NAMES, OutputNames
from core.intensity import simpleitk
from core.io import BadInputs, DataError, DataWarning, check_present, dicom_hint
from core.labels import LabelSpace
from core.modality_profiles import ANY_CONTRAST, ModalityProfiles, background_outliers, zero_fraction
from core.training_spacing import TrainingSpacing
from core.volumes import PreprocessingSettings, Subject, Volume
from datamodules.augmentation import build_augmentation
from datamodules.cache import VolumeCache
from datamodules.datasets import PatchDataset, ReadOnDemand, VolumeDataset
from datamodules.patches import worker_rng
from datamodules.splits import SplitRule, make_split, read_splits_file

PROFILE_SUBJECTS = 16  # training subjects (evenly spread) whose modality profiles go into checkpoints


class NoSubjectsFound(DataError):
    """A folder that holds none of a dataset's subjects in its layout (empty, another layout, a
    scanner's DICOM export): :meth:`VolumeSegmentationDataModule.list_subjects` says which of
    these it is where it can."""


class VolumeSegmentationDataModule(pl.LightningDataModule):
    """Multi-modal 3D segmentation data: training on random patches, validation, test and
    prediction on whole volumes.

    A dataset subclass sets ``available_modalities`` and either ``label_values`` (dataset
    value -> class name, background first) or a ``label_space`` property, and implements
    :meth:`find_subjects`.

    Args:
        data_dir: the dataset's labelled training folder, exactly as the challenge ships it.
        modalities: which modalities to stack as input channels, in this order.
        val_subjects, test_subjects, train_subjects: explicit subject ids per role
            (default training set: every subject not held out).
        val_fraction, test_fraction: or hold out these fractions at random (``split_seed``);
            a list or k-fold given takes the place of a fraction.
        num_folds, fold: or k-fold cross-validation: validate on fold ``fold`` of ``num_folds``
            (drawn with ``split_seed`` from the subjects outside the test set).
        split_seed: seed of the random split and of the folds.
        fold_rule: how k-fold draws its folds: ``seeded`` (with ``split_seed``) or ``nnunet``
            (nnU-Net's own folds: the sorted ids, its fixed seed; ``num_folds: 5`` is its split).
        splits_file: or a split file in nnU-Net's format (its ``splits_final.json``: per fold,
            ``{"train": [...], "val": [...]}``), of which ``fold`` is used.
        predict_dir: folder (same layout, labels not needed) to segment with ``predict``;
            default: the test subjects.
        patch_size: training patch, also the sliding-window size at inference.
        samples_per_volume: patches drawn from each training volume per epoch.
        iterations_per_epoch: or an epoch of exactly this many training batches, whatever the
            number of subjects (nnU-Net's 250): each volume then gets the batches' patches in turn.
        sampling: ``foreground`` (uniform over patches holding at least
            ``min_foreground_voxels`` labelled voxels; the thesis) or ``class_balanced``
            (``class_balanced_fraction`` of patches centred on a random present class; nnU-Net).
        canonical_orientation: reorient every volume to RAS+ (predictions are written back
            in the scan's own orientation).
        resample_to_first: resample modalities (and label) whose grid differs from the first
            modality's onto it through the affines, instead of refusing them.
        affine_tolerance: largest distance (mm) between the world positions of the same voxel
            in two files still counted as the same grid.
        target_spacing: resample to this voxel spacing in mm (predictions go back to the
            scan's own grid).
        n4_bias_correction: N4 bias-field correction (SimpleITK) per modality; slow, cached.
        clip_percentiles: clip each modality to these percentiles of its brain voxels.
        crop_to_nonzero: cut each volume to the box of its non-zero (or labelled) voxels after
            resampling, as nnU-Net does (a skull-stripped brain's box is about 46 % of a BraTS
            grid): training, validation, the cache and prediction work on that box only
            (predictions are written back on the whole scan, background outside the box).
        augmentation: training augmentations, e.g. ``[{name: flip}, {name: elastic}]``
            (see ``datamodules/augmentation.py`` and ``configs/augmentation/``).
        augment_on: where they run: ``loader`` (each patch in the DataLoader workers, on the
            CPU) or ``device`` (the whole batch once it is on the model's device, one batched
            call per step, fields drawn there: the GPU's work when the CPU workers cannot keep
            up with the steps).
        cache_dir: preprocessed volumes are cached here and memory-mapped by the loaders;
            ``null`` keeps them in memory only.
        preprocess_workers: processes that fill the cache in parallel (default: one per
            CPU core).
        num_workers: DataLoader worker processes for the training patches.
    """

    available_modalities: tuple[str, ...] = ()
    label_values: dict[int, str] = {}
    output_names: OutputNames = OUR_NAMES  # how predictions are named (a dataset's own convention)
    # Whether a folder without subjects has its subfolders searched for them (the folder above the
    # dataset's); not for layouts found anywhere below the folder already (BraTS) or indexed whole (BIDS).
    hints_subfolders = True

    def __init__(
        self,
        data_dir: str,
        modalities: Sequence[str] | None = None,
        val_subjects: Sequence[str] = (),
        test_subjects: Sequence[str] = (),
        train_subjects: Sequence[str] | None = None,
        val_fraction: float | None = 0.0,
        test_fraction: float | None = 0.0,
        num_folds: int | None = None,
        fold: int | None = None,
        split_seed: int = 0,
        fold_rule: Literal["seeded", "nnunet"] = "seeded",
        splits_file: str | None = None,
        predict_dir: str | None = None,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        batch_size: int = 2,
        samples_per_volume: int = 8,
        iterations_per_epoch: int | None = None,
        sampling: Literal["foreground", "class_balanced"] = "foreground",
        class_balanced_fraction: float = 0.33,
        min_foreground_voxels: int = 1,
        canonical_orientation: bool = True,
        resample_to_first: bool = False,
        affine_tolerance: float = 1e-3,
        target_spacing: tuple[float, float, float] | None = None,
        n4_bias_correction: bool = False,
        clip_percentiles: tuple[float, float] | None = None,
        crop_to_nonzero: bool = False,
        augmentation: list[dict[str, Any]] | None = None,
        augment_on: Literal["loader", "device"] = "loader",
        cache_dir: str | None = "cache",
        preprocess_workers: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities) if modalities else tuple(self.available_modalities)
        # Every argument (a subclass's too) goes into checkpoints, the modalities as resolved
        # (as the model records them): predict.py rebuilds the preprocessing and the folder
        # reader from them. Saved twice: the first call collects the arguments, the second
        # replaces what was given for the modalities.
        self.save_hyperparameters()
        self.save_hyperparameters({**self.hparams, "modalities": list(self.modalities)})
        self.data_dir = Path(data_dir)
        unknown = [m for m in self.modalities if m not in self.available_modalities]
        if unknown or not self.modalities:
            raise DataError(
                f"{type(self).__name__}: unknown modalities {unknown}; available: {list(self.available_modalities)}"
            )
        self.split_rule = SplitRule(  # contradictions refused now, before anything is built on them
            tuple(map(str, val_subjects)), tuple(map(str, test_subjects)),
            None if train_subjects is None else tuple(map(str, train_subjects)),
            val_fraction, test_fraction, num_folds, fold, split_seed, fold_rule, splits_file)
        self.predict_dir = Path(predict_dir) if predict_dir else None
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        if iterations_per_epoch is not None and iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        self.iterations_per_epoch = iterations_per_epoch
        self.sampling = sampling
        self.class_balanced_fraction = class_balanced_fraction
        self.min_foreground_voxels = min_foreground_voxels
        self.preprocessing = PreprocessingSettings(
            canonical_orientation=canonical_orientation, resample_to_first=resample_to_first,
            affine_tolerance=affine_tolerance,
            target_spacing=None if target_spacing is None else tuple(float(s) for s in target_spacing),
            n4_bias_correction=n4_bias_correction,
            clip_percentiles=None if clip_percentiles is None else tuple(float(p) for p in clip_percentiles),
            crop_to_nonzero=crop_to_nonzero,
        )
        if n4_bias_correction:
            simpleitk()  # an optional dependency: say now, not at the first subject, if it is missing
        self.augment = build_augmentation(augmentation or [])
        if self.generates_images and len(self.modalities) != 1:
            raise ValueError(f"augmentation labels_to_image makes one channel from the label maps; give one modality "
                             f"(validated and tested on its real images), got {list(self.modalities)}")
        if self.generates_images and target_spacing is None:
            raise ValueError("augmentation labels_to_image trains a model for scans of any resolution: set "
                             "target_spacing, the grid every scan is resampled to and back (e.g. the data's own "
                             "spacing, [2.0, 2.0, 2.0] for the demo)")
        if augment_on not in ("loader", "device"):
            raise ValueError(f"augment_on must be 'loader' or 'device', got {augment_on!r}")
        self.augment_on = augment_on
        self._device_checked = False  # augment_on: device on a CPU is said once
        self.cache = VolumeCache(cache_dir)
        self.preprocess_workers = (os.cpu_count() or 1) if preprocess_workers is None else preprocess_workers
        self.num_workers = num_workers
        self._volumes: dict[Subject, Volume] = {}  # labelled volumes, loaded once per process
        self._subjects: dict[str, Subject] | None = None
        self.modality_profiles: ModalityProfiles | None = None  # set by setup("fit"), saved in checkpoints
        self.training_spacing: TrainingSpacing | None = None  # likewise

    # What the model needs to know (linked into SegmentationModule by train.py).
    @property
    def label_space(self) -> LabelSpace:
        """Dataset label values -> classes (override for grouped, ignored or region labels)."""
        return LabelSpace.from_values(self.label_values)

    @property
    def generates_images(self) -> bool:
        """Training images made from the label maps (SynthSeg): the model takes any one contrast."""
        return self.augment is not None and self.augment.generates_images

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def modality_names(self) -> list[str]:
        """What the model records it takes: the modalities in order, or any single contrast."""
        return [ANY_CONTRAST] if self.generates_images else list(self.modalities)

    @abstractmethod
    def find_subjects(self, folder: Path, require_labels: bool) -> list[Subject]:
        """Subjects in ``folder`` in their natural order, images in ``self.modalities`` order.

        Raise :class:`DataError` naming the missing file when a subject lacks a modality (or
        its label when ``require_labels``), and when the folder holds no subject at all.
        """

    # Splits.
    def _find(self, folder: Path, require_labels: bool) -> list[Subject]:
        if not folder.exists():
            option = "predict_dir" if folder == self.predict_dir else "data_dir"
            raise DataError(f"{folder}: dataset folder not found (set data.init_args.{option} to the dataset's folder)")
        return self.list_subjects(folder, require_labels)

    def _subfolder_hint(self, folder: Path, limit: int = 20) -> str | None:
        """Where the subjects are when ``folder`` is the one above the dataset's (the archive's
        top folder, ``iSeg-2017/`` for ``iSeg-2017/iSeg-2017-Training/``): the first of its first
        ``limit`` subfolders in which this layout finds subjects, or None."""
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))[:limit]:
            try:
                found = self.find_subjects(sub, require_labels=False)
            except (DataError, OSError):
                continue
            if found:
                return f"{sub} holds {len(found)} subjects of this layout: give that folder"
        return None

    def list_subjects(self, folder: Path, require_labels: bool, only: Sequence[str] | None = None) -> list[Subject]:
        """:meth:`find_subjects`, or with ``only`` just those named, by id or by what a split keeps
        together (a BIDS participant, ``sub-01``, stands for its sessions; a name that matches none
        is an error); every file of theirs checked readable before any work (an unfetched
        DataLad file is said as that), so the others may be missing."""
        try:
            subjects = self.find_subjects(folder, require_labels)
        except NoSubjectsFound as error:
            hint = None
            if folder.is_dir():
                hint = dicom_hint(folder) or (self._subfolder_hint(folder) if self.hints_subfolders else None)
            if hint:  # a scanner's export, or the folder above the dataset's
                raise NoSubjectsFound(f"{error}; {hint}") from None
            raise
        if only is not None:
            only = [self.subject_name(n) for n in only]
            units = {s.subject_id: self.split_unit(s.subject_id) for s in subjects}
            wanted, known = set(only), set(units) | set(units.values())
            unmatched = [n for n in dict.fromkeys(only) if n not in known]
            if unmatched:
                there = list(units)
                shown = ", ".join(there[:10]) + (f", ... ({len(there)} in all)" if len(there) > 10 else "")
                raise DataError(f"{folder}: no subject {', '.join(unmatched)} there (its subjects: {shown or 'none'})")
            subjects = [s for s in subjects if s.subject_id in wanted or units[s.subject_id] in wanted]
        check_present(f for subject in subjects for f in subject.files())
        return subjects

    def subjects(self) -> dict[str, Subject]:
        """The labelled subjects of ``data_dir`` by id, in the dataset's natural order."""
        if self._subjects is None:
            self._subjects = {s.subject_id: s for s in self._find(self.data_dir, require_labels=True)}
        return self._subjects

    def split_unit(self, subject_id: str) -> str:
        """What a split keeps together: each subject alone here; a BIDS participant's sessions."""
        return subject_id

    def subject_name(self, name: str) -> str:
        """The id that a subject named in a split or on the command line stands for: the name
        itself here; a BIDS participant label may leave out its ``sub-`` (BIDS Apps' form)."""
        return name

    def split(self) -> dict[str, list[Subject]]:
        """``{"train", "val", "test"}`` subject lists; training never includes a held-out subject,
        and no split unit (a participant with several sessions) lies on both sides."""
        subjects = self.subjects()
        members: dict[str, list[str]] = {}
        for subject_id in subjects:
            members.setdefault(self.split_unit(subject_id), []).append(subject_id)
        settings = self.split_rule.as_dict()
        if settings["splits_file"] is not None:  # its lists name subjects as any list does
            settings["train_subjects"], settings["val_subjects"] = read_splits_file(settings["splits_file"],
                                                                                    settings["fold"])
            settings.update(splits_file=None, fold=None)
        for key in ("val_subjects", "test_subjects", "train_subjects"):  # a session named stands for its unit
            if settings[key] is not None:
                named = (self.subject_name(i) for i in settings[key])
                settings[key] = list(dict.fromkeys(self.split_unit(i) if i in subjects else i for i in named))
        units = make_split(list(members), **settings, where=str(self.data_dir))
        unused = [u for u in members if not any(u in chosen for chosen in units.values())]
        if self.split_rule.splits_file is not None and unused:
            rank_zero_warn(f"{self.data_dir}: {len(unused)} subjects are in no list of fold {self.split_rule.fold} of "
                           f"{self.split_rule.splits_file} and not in the test set; unused: "
                           f"{', '.join(unused[:10])}{', ...' if len(unused) > 10 else ''}", category=DataWarning)
        return {role: [subjects[i] for unit in chosen for i in members[unit]] for role, chosen in units.items()}

    def split_summary(self) -> dict[str, Any]:
        """The split as saved beside a run's config: subject ids per role and how they were chosen."""
        return {"data_dir": str(self.data_dir), "rule": self.split_rule.as_dict(),
                **{role: [s.subject_id for s in members] for role, members in self.split().items()}}

    # Volumes.
    def _load(self, subjects: Sequence[Subject]) -> list[Volume]:
        """The subjects' volumes (read once); the bad input of all of them is said together."""
        bad = BadInputs(len(subjects))
        for s in subjects:
            if s not in self._volumes:
                volume = bad.attempt(lambda s=s: self.cache.load(s, self.label_space, self.preprocessing))
                if volume is not None:
                    self._volumes[s] = volume
        bad.raise_any()
        return [self._volumes[s] for s in subjects]

    def prepare_data(self) -> None:
        """Fill the disk cache once (rank 0), so DDP ranks only memory-map it in ``setup``.
        Prediction skips it: it may run where only the scans to segment exist."""
        stage = getattr(getattr(self.trainer, "state", None), "fn", None)
        if self.cache.directory is not None and getattr(stage, "value", stage) != "predict":
            split = self.split()
            made = self.cache.fill([*split["train"], *split["val"], *split["test"]], self.label_space,
                                   self.preprocessing, workers=self.preprocess_workers)
            if made:
                rank_zero_info(f"preprocessed and cached {made} subjects in {self.cache.directory}")

    def setup(self, stage: str) -> None:
        if stage == "predict":  # what to segment: known now, read one at a time when its turn comes
            self.predict_only(self.split()["test"] if self.predict_dir is None
                              else self._find(self.predict_dir, require_labels=False))
            return
        split = self.split()
        if stage == "fit":
            if not split["train"]:
                raise DataError(f"{self.data_dir}: no training subjects left after holding out val/test")
            volumes = self._load(split["train"])
            self.train_set = PatchDataset(
                volumes, self.patch_size, self.samples_per_volume, sampling=self.sampling,
                length=None if self.iterations_per_epoch is None else self.iterations_per_epoch * self.batch_size,
                min_foreground_voxels=self.min_foreground_voxels,
                class_balanced_fraction=self.class_balanced_fraction,
                augment=self.augment if self.augment_on == "loader" else None,
                overhang=self.preprocessing.crop_to_nonzero)
            chosen = np.linspace(0, len(volumes) - 1, min(len(volumes), PROFILE_SUBJECTS)).round().astype(int)
            if not self.generates_images:
                fractions = {v.subject_id: [zero_fraction(channel) for channel in v.image] for v in volumes}
                self.modality_profiles = ModalityProfiles.from_images(
                    [volumes[i].image for i in chosen], self.modalities,
                    [fractions[volumes[i].subject_id] for i in chosen])
                for problem in background_outliers(fractions, self.modalities):
                    rank_zero_warn(f"{self.data_dir}: {problem}", category=DataWarning)
            elif self.augment.zero_background:  # any contrast: no intensities to hold scans to, only a background
                self.modality_profiles = ModalityProfiles.of_generated_images(volumes[i].label for i in chosen)
            self.training_spacing = TrainingSpacing.of_affines(v.affine for v in volumes)
        if stage in ("fit", "validate"):
            self.val_set = VolumeDataset(self._load(split["val"]))
        if stage == "test":
            self.test_set = VolumeDataset(self._load(split["test"]))

    def predict_only(self, subjects: Sequence[Subject]) -> None:
        """Segment these subjects (those of ``setup("predict")``, or fewer: a continued prediction
        leaves out the ones an interrupted run wrote whole), read one at a time when their turn comes."""
        self.predict_subjects = list(subjects)
        self.predict_set = VolumeDataset(ReadOnDemand(
            self.predict_subjects, lambda subject: self.cache.load(subject, None, self.preprocessing)))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment_on: device``, the training batch is augmented here, on the model's
        device, one batched call per step (``Augmentation.batch``) with one generator drawn from
        torch's (seeded) RNG and the rank."""
        if self.augment_on != "device" or self.augment is None or self.trainer is None or not self.trainer.training:
            return batch
        if not self._device_checked:
            self._device_checked = True
            if batch["image"].device.type == "cpu":
                rank_zero_warn("augment_on: device, but the model trains on the CPU: each batch is augmented in the "
                               "training process between steps; augment_on: loader with num_workers > 0 augments "
                               "in the loader's workers while the model trains")
        image, label = self.augment.batch(batch["image"], batch["label"], worker_rng(), self.label_space.num_classes)
        return {**batch, "image": image, "label": label}

    # Loaders.
    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=len(self.train_set) >= self.batch_size,
        )

    def _whole_volumes(self, dataset: VolumeDataset) -> DataLoader:
        """One volume per batch; under DDP each subject on exactly one process (see
        :class:`SubjectShards`), so every subject counts once in every metric."""
        sampler = SubjectShards(dataset) if torch.distributed.is_available() and torch.distributed.is_initialized() \
            else None
        return DataLoader(dataset, batch_size=1, shuffle=False, sampler=sampler, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._whole_volumes(self.predict_set)


class SubjectShards(DistributedSampler):
    """Whole volumes split over the processes without padding: process ``r`` of ``n`` takes
    subjects ``r, r + n, ...``, so an odd number of subjects is not evened out by repeating one
    (Lightning's default ``DistributedSampler`` pads, which counted a subject twice in the
    validation Dice and in the choice of ``best.ckpt``). Being a ``DistributedSampler``, Lightning
    keeps it instead of replacing it; the metrics gather per-subject scores across processes."""

    def __init__(self, dataset: VolumeDataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)

    def _mine(self) -> list[int]:
        return list(range(self.rank, len(self.dataset), self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
