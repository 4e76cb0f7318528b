"""One LightningModule that trains and evaluates any registered network."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from monai.losses import DeepSupervisionLoss
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from core.checkpoint import (
    DATAMODULE_CLASS,
    MODALITY_PROFILES,
    RUN_RECORD,
    TRAINING_SPACING,
    model_hparams,
    read_checkpoint,
    recorded_path,
)
from core.inference import PRECISIONS, emulated_precision
from core.io import DataWarning
from core.labels import LabelSpace
from core.metrics import dice_per_structure
from core.modality_profiles import ModalityProfiles
from core.segmenter import Segmenter, input_problems
from core.training_spacing import TrainingSpacing
from core.transfer import WeightTransfer, transfer_weights
from lightning_modules.distributed import gather_by_subject
from lightning_modules.losses import build_loss
from lightning_modules.schedules import PolyLR
from networks import build_network
from networks.outputs import TrainingOutput, as_training_output, network_border


class SegmentationModule(pl.LightningModule):
    """Trains on patches; validates and tests on whole volumes by Gaussian-weighted
    sliding-window inference; reports the hard-label Dice of each scored structure (foreground
    class or region) per subject, by the formula of every table (:mod:`core.metrics`), and its
    mean over subjects: each subject counted once on any number of processes.

    Every constructor argument is saved in the checkpoint, so
    ``SegmentationModule.load_from_checkpoint(path)`` rebuilds network and settings alone.

    Args:
        network: registered network name (``networks.list_networks()``).
        network_kwargs: that network's options (e.g. ``base_features``), typed in its constructor;
            ``python -m networks <name>`` lists them, and an unknown one is an error listing them.
        channels_last: the 3D convolution weights in ``channels_last_3d`` memory layout: faster
            on CPUs (oneDNN), same results and checkpoints; None: the network's default
            (:func:`networks.build_network`).
        compile_network: ``torch.compile`` the network when fitting starts (opt-in: the first
            steps pay the compilation, printed; later ones run faster on a GPU, slower on the
            demo's 2-core CPU: docs/benchmarks.md); true for the default backend (inductor), or a
            backend's name (``"eager"`` checks the tracing alone). The module's weights and
            checkpoint keys are the same either way.
        in_channels, modalities, label_space: filled in from the DataModule by ``train.py``;
            ``label_space`` is the data's label space (:class:`core.labels.LabelSpace` as a dict):
            classes and the dataset value of each, ignored values, and regions. With regions
            the model is region-based: one sigmoid output per region, sigmoid Dice + binary
            cross-entropy, Dice per region (how BraTS is scored), predictions painted back into
            classes. Without: softmax over the classes, Dice per foreground class.
            Default: two generic classes.
        loss: ``dice``, ``ce`` or ``dice_ce``.
        optimizer: any ``torch.optim`` class with its arguments (LightningCLI: ``class_path``
            and ``init_args``; in Python, e.g. ``functools.partial(torch.optim.SGD, lr=0.01)``).
        lr_scheduler: a schedule stepped once per optimiser step: ``PolyLR`` (nnU-Net's
            (1 - t/T)^0.9), ``CosineLR`` (both run to the end of training on their own), any
            ``torch.optim.lr_scheduler`` class, or None for a constant rate.
        roi_size: sliding-window size (``train.py`` sets it to the training patch size).
        inference_roi_size: a different window for validation/test/predict, e.g. larger
            windows for unpadded networks, which waste less of each window on its border.
        window_scale: inference windows this many times ``inference_roi_size`` (or the patch)
            per side, no larger than the volume rounded up to whole windows: fewer, larger windows
            recompute less of the overlap (the demo's volume: 1.97 s against 5.00 s at 2); any
            integer keeps every size the network must divide by.
        sw_batch_size: windows per forward pass at inference.
        sw_overlap: overlap of neighbouring windows at inference (raised where an unpadded
            network needs more to cover every voxel with a window's valid centre).
        flips: in ``predict``, average the probabilities over the 8 mirrorings
            (test-time augmentation). An inference choice, not stored in checkpoints;
            ``train.py`` links it to ``--prediction_writer.flips``.
        inference_precision: the precision of validation, test and predict on whole volumes:
            ``"32"`` (float32, the default, whatever precision trains: the CPU's ``bf16-mixed``
            default included, so that ``train.py test`` scores what ``predict.py`` and
            ``evaluate.py`` score, to the digit) or ``"bf16"`` (bfloat16 autocast: faster
            whole-volume validation on a GPU; ``predict.py --precision bf16`` then agrees). An
            inference choice, not stored in checkpoints.
        pretrained: fine-tune: start fitting from this checkpoint's network weights (a checkpoint
            of this codebase, same network and options; read with ``weights_only=True``). Input
            channels are matched by modality and outputs by class or region name, so the data may
            differ: a modality it lacks starts from the mean of its channels' filters, a class or
            region it lacks from fresh weights (:mod:`core.transfer`; what was taken is printed).
            Loaded when a fit starts, not when a fit resumes; recorded absolute in checkpoints.

    Target voxels equal to ``IGNORE_INDEX`` count in no loss and no Dice.

    Networks with unpadded convolutions (``network.border > 0``) are trained against the
    target's centre and evaluated on the volume padded by the border, so output and target
    always line up. Networks that return a ``TrainingOutput`` in training have their
    deep-supervision heads and regularisers trained too.
    """

    def __init__(
        self,
        network: str = "unet3d",
        network_kwargs: dict[str, Any] | None = None,
        channels_last: bool | None = None,
        compile_network: bool | str = False,
        in_channels: int = 1,
        modalities: list[str] | None = None,
        label_space: dict[str, Any] | None = None,
        loss: Literal["dice", "ce", "dice_ce"] = "dice_ce",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = PolyLR,
        roi_size: tuple[int, int, int] = (64, 64, 64),
        inference_roi_size: tuple[int, int, int] | None = None,
        window_scale: int = 1,
        sw_batch_size: int = 2,
        sw_overlap: float = 0.5,
        flips: bool = False,
        inference_precision: Literal["32", "bf16"] = "32",
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if inference_precision not in PRECISIONS:
            raise ValueError(f"inference_precision must be one of {', '.join(PRECISIONS)}, got {inference_precision!r}")
        self.labels = LabelSpace.from_dict(label_space) if label_space else LabelSpace.generic(2)
        # The optimiser and schedule are callables (classes with their arguments): recorded in the
        # run's config by LightningCLI, not in checkpoints, which hold tensors and plain types only.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "flips", "inference_precision"])
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.hparams["label_space"] = self.labels.to_dict()  # always stored whole, the default too
        self.hparams["pretrained"] = recorded_path(pretrained) if pretrained else None  # which file, for good
        self._pretrained_loaded = False
        self.flips, self.inference_precision = flips, inference_precision
        self.network = build_network(network, channels_last=channels_last, in_channels=in_channels,
                                     num_classes=self.labels.num_outputs, **(network_kwargs or {}))
        self._compiled = self._timing_first_step = False  # torch.compile: done, its first step to time
        self._first_step_start = 0.0
        self.loss_fn = build_loss(loss, region_based=self.labels.region_based)
        self.deep_supervision_loss = DeepSupervisionLoss(self.loss_fn, weight_mode="exp")
        self.border = network_border(self.network)
        self.modality_profiles: ModalityProfiles | None = None  # the training scans', from the checkpoint
        self.training_spacing: TrainingSpacing | None = None  # likewise
        self.input_problems: dict[str, list[str]] = {}  # subject -> what _check_input said (empty: nothing)
        self.run_record: dict[str, Any] | None = None  # the run's config, command and code (train.py sets it)
        # Per stage and subject: the loss and the hard-label Dice of each scored structure
        # (foreground class or region), by the formula of every table (core.metrics: a structure
        # absent from truth and prediction scores 1, a spurious or missed one 0); keyed by subject,
        # so each counts once, and weighs the same, on any number of processes and shards.
        self.subject_scores: dict[str, dict[str, tuple[float, list[float]]]] = {"val": {}, "test": {}}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = True, **kwargs: Any) -> Any:
        """Lightning's loader with ``weights_only=True``; checkpoints written before the label
        space was stored whole get theirs rebuilt from their separate label arguments."""
        if "label_space" not in kwargs:
            kwargs["label_space"] = model_hparams(read_checkpoint(checkpoint_path))["label_space"]
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)

    @property
    def segmenter(self) -> Segmenter:
        """This model's network as a :class:`~core.segmenter.Segmenter` (window settings from
        the hyperparameters): the inference path ``predict.py`` takes too."""
        hp = self.hparams
        return Segmenter(self.network, self.labels, tuple(hp.inference_roi_size or hp.roi_size),
                         tuple(hp.modalities or ()), sw_batch_size=hp.sw_batch_size, sw_overlap=hp.sw_overlap,
                         source=f"{type(self).__name__}({hp.network})", profiles=self.modality_profiles,
                         training_spacing=self.training_spacing,
                         window_scale=hp.window_scale, precision=self.inference_precision,
                         patch_size=tuple(hp.roi_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits for whole *preprocessed* volumes (B, C, D, H, W) by Gaussian-weighted sliding
        windows; unpadded networks are handled (see :func:`core.inference.sliding_window_logits`)."""
        return self.segmenter.logits(image)

    def training_losses(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training loss of one batch (``loss``) and its parts: ``segmentation`` (main output
        plus deep-supervision heads) and each regulariser the network returns."""
        output = as_training_output(self(image))
        target = self.labels.loss_target(self._target_for(output, image, label))
        logits = [output.logits, *output.deep_supervision]
        # DeepSupervisionLoss resizes float targets by nearest neighbour: IGNORE_INDEX survives.
        segmentation = (self.deep_supervision_loss(logits, target.float()) if output.deep_supervision
                        else self.loss_fn(output.logits.float(), target))
        loss = segmentation + sum(output.regularisers.values())
        return {"loss": loss, "segmentation": segmentation, **output.regularisers}

    def load_pretrained(self) -> WeightTransfer | None:
        """Fine-tuning: the ``pretrained`` checkpoint's weights into the network, once (see the
        class docstring), and what was taken said; None when there is none or it was loaded already."""
        path = self.hparams.get("pretrained")
        if not path or self._pretrained_loaded:
            return None
        transfer = transfer_weights(self.network, read_checkpoint(path), list(self.hparams.get("modalities") or []),
                                    self.labels, tuple(self.hparams.roi_size), source=str(path),
                                    network_name=self.hparams.network)
        self._pretrained_loaded = True
        rank_zero_info(transfer.summary())
        return transfer

    def setup(self, stage: str) -> None:
        """Say at once when whole volumes would be evaluated in a precision this device only
        emulates (``inference_precision: bf16`` on an AVX2 CPU)."""
        problem = emulated_precision(self.trainer.strategy.root_device, self.inference_precision)
        if problem:
            rank_zero_warn(f"model.inference_{problem}; evaluate in float32: --model.inference_precision 32",
                           category=DataWarning)

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a resumed fit has its own weights
            self.load_pretrained()
        backend = self.hparams.get("compile_network")
        if backend and not self._compiled:
            # In place (nn.Module.compile): the same module, parameters and state-dict keys.
            self.network.compile(**({} if backend is True else {"backend": backend}))
            self._compiled, self._timing_first_step = True, True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._timing_first_step:
            self._first_step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._timing_first_step:  # said once: what the compilation cost
            self._timing_first_step = False
            start, backend = self._first_step_start, self.hparams.get("compile_network")
            rank_zero_info(f"torch.compile ({'inductor' if backend is True else backend}): the first training "
                           f"step took {time.perf_counter() - start:.1f} s, compilation included")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch["image"], batch["label"])
        batch_size = batch["image"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        if len(losses) > 2:  # the network has regularisers: log every part
            for name, value in losses.items():
                if name != "loss":
                    self.log(f"train/loss_{name}", value, batch_size=batch_size)
        return losses["loss"]

    def _target_for(self, output: TrainingOutput, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The label cropped to the network's output: its centre for unpadded networks. Any other
        mismatch is an error, never a silent misalignment."""
        b = self.border
        expected = tuple(s - 2 * b for s in image.shape[2:])
        got = tuple(output.logits.shape[2:])
        if got != expected:
            raise RuntimeError(f"{self.hparams.network} returned spatial size {got} for input "
                               f"{tuple(image.shape[2:])}; with border {b} it should be {expected}")
        return label[..., b:-b, b:-b, b:-b] if b else label

    def _check_input(self, batch: dict[str, Any]) -> None:
        """Warn once per subject of what sets it apart from the training scans (the checkpoint's
        record, or in a fit the DataModule's; :func:`core.segmenter.input_problems`): its scores
        are not the model's."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        spacing = self.training_spacing or getattr(datamodule, "training_spacing", None)
        profiles = self.modality_profiles or getattr(datamodule, "modality_profiles", None)
        window = tuple(self.hparams.roi_size) if self.hparams.get("roi_size") else None  # the training patch
        if spacing is None and profiles is None and window is None:
            return
        names = [f"input channel {c}" for c in range(batch["image"].shape[1])]  # as predict_step names them
        for i, subject in enumerate(batch["subject"]):
            if subject in self.input_problems:
                continue
            affine = batch["affine"][i].cpu().numpy() if "affine" in batch else None
            image = batch["image"][i].float().cpu().numpy()
            self.input_problems[subject] = input_problems(image, affine, names, profiles, spacing, window)
            for problem in self.input_problems[subject]:
                warnings.warn(f"{subject}: {problem}", DataWarning, stacklevel=2)  # each process its own subjects

    def _evaluate_volume(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        self._check_input(batch)
        logits = self.predict_logits(batch["image"]).float()
        label = batch["label"].long()
        dice = dice_per_structure(*self.labels.dice_masks(logits, label))
        for i, (subject, scores) in enumerate(zip(batch["subject"], dice.tolist(), strict=True)):
            loss = self.loss_fn(logits[i:i + 1], self.labels.loss_target(label[i:i + 1]))
            self.subject_scores[stage][subject] = (float(loss), scores)
        return {"prediction": self.labels.classes_from_logits(logits), "dice": dice[0]}

    def _log_means(self, stage: str) -> None:
        """The mean over the subjects of every process of the loss, of the Dice per structure,
        and of their mean: each subject weighs the same however the subjects were sharded (a
        mean of per-process means weighed 3 subjects on 2 processes 2:1)."""
        results = gather_by_subject(self.subject_scores[stage])
        self.subject_scores[stage] = {}
        if not results:
            return
        losses = [loss for loss, _ in results.values()]
        self.log(f"{stage}/loss", sum(losses) / len(losses), sync_dist=True)  # identical on every process
        per_structure = torch.tensor([dice for _, dice in results.values()], dtype=torch.float64).mean(dim=0)
        for name, value in zip(self.labels.structure_names, per_structure.tolist(), strict=True):
            self.log(f"{stage}/dice_{name}", value, sync_dist=True)  # identical on every process
        self.log(f"{stage}/dice_mean", per_structure.mean().item(), prog_bar=True, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.subject_scores["val"] = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate_volume(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_means("val")

    def on_test_epoch_start(self) -> None:
        self.subject_scores["test"] = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate_volume(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_means("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Probabilities (mean over mirrorings with ``flips``) and class maps on the
        network's grid, with the grid information the writer needs to go back to the scan's:
        :meth:`Segmenter.probabilities <core.segmenter.Segmenter.probabilities>`, ``predict.py``'s
        path (its input check, mirroring and precision)."""
        segmenter = self.segmenter
        problems = []
        for i, (subject, image) in enumerate(zip(batch["subject"], batch["image"], strict=True)):
            affine = batch["affine"][i].cpu().numpy() if "affine" in batch else None  # other loaders: no grid
            problems.append(segmenter.check_input(image.cpu().numpy(), affine,
                                                  [f"input channel {c}" for c in range(len(image))], subject))
        probs = segmenter.probabilities(batch["image"], flips=self.flips)
        grids = {key: batch[key] for key in ("affine", "original_affine", "original_shape") if key in batch}
        return {"subject": batch["subject"], "prediction": self.labels.classes_from_probabilities(probs)[:, 0],
                "probabilities": probs, "problems": problems, **grids}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the DataModule class beside its saved arguments (Lightning stores those as
        ``datamodule_hyper_parameters``), so predict.py can read new scans the same way; keep
        the training scans' intensity profile per modality and their voxel spacing, to warn about
        swapped inputs and scans on other grids."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            checkpoint[DATAMODULE_CLASS] = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
        profiles = getattr(datamodule, "modality_profiles", None) or self.modality_profiles
        if profiles is not None:
            checkpoint[MODALITY_PROFILES] = profiles.to_dict()
        spacing = getattr(datamodule, "training_spacing", None) or self.training_spacing
        if spacing is not None:
            checkpoint[TRAINING_SPACING] = spacing.to_dict()
        if self.run_record is not None:
            checkpoint[RUN_RECORD] = self.run_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.modality_profiles = ModalityProfiles.from_dict(checkpoint.get(MODALITY_PROFILES))
        self.training_spacing = TrainingSpacing.from_dict(checkpoint.get(TRAINING_SPACING))
        self.run_record = self.run_record or checkpoint.get(RUN_RECORD)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if getattr(scheduler, "total_iters", 0) is None:  # PolyLR / CosineLR: run to the end of training
            scheduler.total_iters = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
