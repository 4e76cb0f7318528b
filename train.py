"""LightningCLI entry point: ``python train.py {fit,validate,test,predict} --config <yaml>``.

W&B logs offline under ``runs/`` unless the environment says otherwise
(``WANDB_MODE=online`` with a key logs live; ``wandb sync`` uploads offline runs later).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jsonargparse import lazy_instance
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from datamodules import VolumeSegmentationDataModule
from lightning_modules import SegmentationModule
from lightning_modules.callbacks import (
    LearningCurves,
    OptionalLearningRateMonitor,
    SegmentationWriter,
    TestReport,
    ValidationImages,
)

TRAINER_DEFAULTS = {
    "logger": lazy_instance(WandbLogger, save_dir="runs", project="brain-mri-segmentation"),
    "callbacks": [lazy_instance(OptionalLearningRateMonitor, logging_interval="step")],
    "log_every_n_steps": 10,
}


class RunConfigSaver(SaveConfigCallback):
    """Saves the run's full config and its data split (``split.json``: subject ids per role
    and the rule that chose them) beside each logger's files (the W&B run folder, which
    ``wandb sync`` uploads, or the TensorBoard/CSV version folder) and into the W&B config."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn enum: "fit", "test", ...
        datamodule = trainer.datamodule
        split = (datamodule.split_summary()
                 if isinstance(datamodule, VolumeSegmentationDataModule) and stage != "predict" else None)
        folders = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                folders.append(Path(logger.experiment.dir))
                logger.experiment.config.update({"cli": self.parser.dump(self.config, skip_unset=False),
                                                 "split": split}, allow_val_change=True)
            elif logger.log_dir:
                folders.append(Path(logger.log_dir))
        for folder in folders or [Path(trainer.default_root_dir)]:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder / f"{stage}-{self.config_filename}"),
                             skip_unset=False, overwrite=True, multifile=self.multifile)
            if split is not None:
                (folder / "split.json").write_text(json.dumps(split, indent=1))


class SegmentationCLI(LightningCLI):
    """The CLI: any DataModule by class path; the network, its size and the data's channels,
    classes and patch size flow into the model without being repeated in the config."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/dice_mean",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.add_lightning_class_args(LearningCurves, "learning_curves")
        parser.add_lightning_class_args(ValidationImages, "validation_images")
        parser.add_lightning_class_args(SegmentationWriter, "prediction_writer")
        parser.link_arguments("data.init_args.patch_size", "model.roi_size")
        for source, target in (("in_channels", "in_channels"), ("num_classes", "num_classes"),
                               ("class_names", "class_names"), ("modality_names", "modalities"),
                               ("class_values", "label_values"), ("regions", "regions"),
                               ("region_names", "region_names")):
            parser.link_arguments(f"data.{source}", f"model.{target}", apply_on="instantiate")


def run_cli(args: list[str] | None = None, save_config: bool = True, run: bool = True) -> SegmentationCLI:
    """Parse ``args`` (default: the command line), build model, data and trainer, and run the
    subcommand (unless ``run`` is false: then ``args`` hold no subcommand and nothing runs).
    W&B logs offline unless ``WANDB_MODE`` says otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    return SegmentationCLI(
        SegmentationModule,
        VolumeSegmentationDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver if save_config else None,
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
        run=run,
    )


if __name__ == "__main__":
    run_cli()
