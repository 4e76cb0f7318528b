"""One LightningModule that trains and evaluates any registered network."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss
from monai.metrics import DiceMetric

from lightning_modules.inference import classes_from, probabilities
from lightning_modules.losses import (
    build_loss,
    masked_one_hot,
    region_paint_classes,
    region_targets,
    regions_to_classes,
    valid_mask,
)
from networks import build_network
from networks.outputs import TrainingOutput, as_training_output, network_border


class SegmentationModule(pl.LightningModule):
    """Trains on patches; validates and tests on whole volumes by Gaussian-weighted
    sliding-window inference; reports hard-label Dice per region, background excluded.

    Every constructor argument is saved in the checkpoint, so
    ``SegmentationModule.load_from_checkpoint(path)`` rebuilds network and settings alone.

    Args:
        network: registered network name (``networks.list_networks()``).
        network_kwargs: extra arguments for that network (e.g. ``base_features``).
        in_channels, num_classes, class_names, modalities, label_values: filled in from the
            DataModule by ``train.py``; ``label_values`` are the dataset's own values per class.
        loss: ``dice``, ``ce`` or ``dice_ce`` (softmax; with ``regions``, sigmoid Dice over every
            region and binary cross-entropy).
        optimizer, lr, weight_decay, momentum: ``momentum`` is used by SGD only.
        lr_schedule: ``constant``, ``poly`` (nnU-Net's (1 - t)^0.9) or ``cosine``, per step.
        roi_size: sliding-window size (``train.py`` sets it to the training patch size).
        inference_roi_size: a different window for validation/test/predict, e.g. larger
            windows for unpadded networks, which waste less of each window on its border.
        sw_batch_size: windows per forward pass at inference.
        sw_overlap: overlap of neighbouring windows at inference (raised where an unpadded
            network needs more to cover every voxel with a window's valid centre).
        regions: class indices forming each region (BraTS: ``[[1, 2, 3], [1, 3], [3]]``) for
            region-based training: one sigmoid output per region, losses and Dice on the
            (overlapping) regions, which is how such datasets are scored. None: softmax over
            the classes. Predictions are class maps either way (regions painted back in order,
            see :func:`~lightning_modules.losses.region_paint_classes`).
        region_names: one name per region for the logs and tables (default ``region1``, ...).

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
        in_channels: int = 1,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        modalities: list[str] | None = None,
        label_values: list[int] | None = None,
        loss: Literal["dice", "ce", "dice_ce"] = "dice_ce",
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        momentum: float = 0.9,
        lr_schedule: Literal["constant", "poly", "cosine"] = "poly",
        roi_size: tuple[int, int, int] = (64, 64, 64),
        inference_roi_size: tuple[int, int, int] | None = None,
        sw_batch_size: int = 2,
        sw_overlap: float = 0.5,
        regions: list[list[int]] | None = None,
        region_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if class_names is None:
            class_names = ["background"] + [f"class{i}" for i in range(1, num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes: {class_names}")
        self.class_names = list(class_names)
        self.regions = self._check_regions(regions, num_classes)
        if region_names is not None and self.regions is None:
            raise ValueError(f"region_names {region_names} given without regions")
        if self.regions is not None:
            region_names = region_names or [f"region{i}" for i in range(1, len(self.regions) + 1)]
            if len(region_names) != len(self.regions):
                raise ValueError(f"{len(region_names)} region names for {len(self.regions)} regions: {region_names}")
            self._region_names = list(region_names)
            self.paint_classes = region_paint_classes(self.regions)
        outputs = num_classes if self.regions is None else len(self.regions)
        self.network = build_network(network, in_channels=in_channels, num_classes=outputs, **(network_kwargs or {}))
        self.loss_fn = build_loss(loss, region_based=self.regions is not None)
        self.deep_supervision_loss = DeepSupervisionLoss(self.loss_fn, weight_mode="exp")
        self.border = network_border(self.network)
        # Hard-label Dice per subject and foreground class (or region: every channel); NaN
        # where it is absent from the ground truth (MONAI's ignore_empty), left out of the means.
        every_channel = self.regions is not None
        self.val_dice = DiceMetric(include_background=every_channel, reduction="none", ignore_empty=True)
        self.test_dice = DiceMetric(include_background=every_channel, reduction="none", ignore_empty=True)

    @staticmethod
    def _check_regions(regions: list[list[int]] | None, num_classes: int) -> list[list[int]] | None:
        if regions is None:
            return None
        regions = [[int(c) for c in region] for region in regions]
        if not regions:
            raise ValueError("regions is empty; pass None for ordinary multi-class training")
        for region in regions:
            if not region or not set(region) <= set(range(1, num_classes)):
                raise ValueError(f"region {region} must list foreground classes 1..{num_classes - 1}")
        return regions

    @property
    def region_names(self) -> list[str]:
        """The Dice columns: the regions in region mode, else the foreground classes."""
        return list(self._region_names) if self.regions is not None else self.class_names[1:]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits for whole volumes (B, C, D, H, W) by Gaussian-weighted sliding windows."""
        roi = tuple(self.hparams.inference_roi_size or self.hparams.roi_size)
        if self.border == 0:
            return sliding_window_inference(image, roi_size=roi, sw_batch_size=self.hparams.sw_batch_size,
                                            predictor=self.network, overlap=self.hparams.sw_overlap, mode="gaussian")
        return self._predict_unpadded(image, roi)

    def _predict_unpadded(self, image: torch.Tensor, roi: tuple[int, ...]) -> torch.Tensor:
        """Sliding windows for a network whose output is its input minus ``b`` voxels a side.

        The volume is padded by ``b`` (zero, the z-scored background) so every voxel can be a
        window's centre. Each window's output is put back in the window's frame together with a
        mask of where it is valid; MONAI blends both with the same Gaussian weights, and their
        ratio is the weighted mean over the windows whose valid centre covers the voxel. The
        overlap is raised so that the window step never exceeds the valid centre.
        """
        b = self.border
        if min(roi) <= 2 * b:
            raise ValueError(f"inference windows {roi} leave nothing of {self.hparams.network}'s output: "
                             f"it loses {b} voxels a side, so every side must exceed {2 * b}")

        def predictor(window: torch.Tensor) -> torch.Tensor:
            logits = self.network(window)
            valid = torch.ones_like(logits[:, :1])
            return F.pad(torch.cat([logits, valid], dim=1), [b] * 6)

        overlap = max(self.hparams.sw_overlap, 2 * b / min(roi))
        blended = sliding_window_inference(F.pad(image, [b] * 6), roi_size=roi, predictor=predictor,
                                           sw_batch_size=self.hparams.sw_batch_size, overlap=overlap,
                                           mode="gaussian")
        blended = blended[..., b:-b, b:-b, b:-b]
        return blended[:, :-1] / blended[:, -1:].clamp_min(torch.finfo(blended.dtype).tiny)

    def training_losses(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training loss of one batch (``loss``) and its parts: ``segmentation`` (main output
        plus deep-supervision heads) and each regulariser the network returns."""
        output = as_training_output(self(image))
        target = self.loss_target(self._target_for(output, image, label))
        logits = [output.logits, *output.deep_supervision]
        # DeepSupervisionLoss resizes float targets by nearest neighbour: IGNORE_INDEX survives.
        segmentation = (self.deep_supervision_loss(logits, target.float()) if output.deep_supervision
                        else self.loss_fn(output.logits.float(), target))
        loss = segmentation + sum(output.regularisers.values())
        return {"loss": loss, "segmentation": segmentation, **output.regularisers}

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

    def loss_target(self, label: torch.Tensor) -> torch.Tensor:
        """What the loss compares the logits with: the class map (long), or in region mode
        its multi-hot regions (float, ``IGNORE_INDEX`` kept at ignored voxels)."""
        return label.long() if self.regions is None else region_targets(label, self.regions)

    def predict_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """Class map (B, 1, ...) from logits: argmax, or in region mode the regions above
        0.5 (logit 0) painted back to classes."""
        if self.regions is None:
            return logits.argmax(dim=1, keepdim=True)
        return regions_to_classes(logits > 0, self.paint_classes)

    def dice_inputs(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary prediction and truth (B, C or R, ...) for the hard Dice, both zero at ignored
        voxels so those add to no intersection and no volume."""
        valid = valid_mask(label)
        if self.regions is None:
            prediction = masked_one_hot(logits.argmax(dim=1, keepdim=True), self.hparams.num_classes) * valid
            return prediction, masked_one_hot(label, self.hparams.num_classes)
        truth = region_targets(label, self.regions).clamp_min(0)
        return (logits > 0).float() * valid, truth

    def _evaluate_volume(self, batch: dict[str, Any], metric: DiceMetric, stage: str) -> dict[str, Any]:
        logits = self.predict_logits(batch["image"]).float()
        label = batch["label"].long()
        self.log(f"{stage}/loss", self.loss_fn(logits, self.loss_target(label)), batch_size=1, sync_dist=True)
        dice = metric(*self.dice_inputs(logits, label))
        return {"prediction": self.predict_classes(logits), "dice": dice[0]}

    def _log_dice(self, metric: DiceMetric, stage: str) -> None:
        scores = metric.aggregate()  # (subjects, regions), gathered over DDP ranks
        metric.reset()
        per_region = scores.nanmean(dim=0)
        for name, value in zip(self.region_names, per_region, strict=True):
            self.log(f"{stage}/dice_{name}", value, sync_dist=True)  # identical on every rank
        self.log(f"{stage}/dice_mean", per_region.nanmean(), prog_bar=True, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate_volume(batch, self.val_dice, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_dice(self.val_dice, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate_volume(batch, self.test_dice, "test")

    def on_test_epoch_end(self) -> None:
        self._log_dice(self.test_dice, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = probabilities(self, batch["image"], flips=getattr(self, "predict_flips", False))
        grids = {key: batch[key] for key in ("affine", "original_affine", "original_shape") if key in batch}
        output = {"subject": batch["subject"], "prediction": classes_from(self, probs), **grids}
        if getattr(self, "predict_probabilities", False):
            output["probabilities"] = probs
        return output

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the DataModule class beside its saved arguments (Lightning stores those as
        ``datamodule_hyper_parameters``), so predict.py can read new scans the same way."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            checkpoint["datamodule_class"] = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum,
                                        weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {hp.optimizer!r}; choose adamw, adam or sgd")
        if hp.lr_schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if hp.lr_schedule == "poly":
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: max(0.0, 1.0 - step / total) ** 0.9)
        elif hp.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        else:
            raise ValueError(f"unknown lr_schedule {hp.lr_schedule!r}; choose constant, poly or cosine")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
