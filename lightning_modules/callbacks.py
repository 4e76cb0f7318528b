"""Callbacks that turn evaluation and prediction into files on disk."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from core.checkpoint import WANDB_RUN_ID, checkpoint_identity
from core.export import OUR_NAMES, PredictionFolder, Segmentation, named_by_case, output_identity
from core.figures import plt, save_comparison_png, save_learning_curves_png
from core.geometry import voxel_spacing
from core.io import DataError, DataWarning, OutputError, earlier_report, write_text_atomically
from core.labels import IGNORE_INDEX
from core.lesions import lesion_rule, lesion_table, score_columns, subject_rows
from core.metrics import INPUT_PROBLEMS_CSV, csv_text, summarise, text_table, volume_diagonal
from core.postprocessing import class_groups, keep_largest
from lightning_modules.distributed import gather_by_subject


class OptionalLearningRateMonitor(LearningRateMonitor):
    """Lightning's learning-rate monitor, silent instead of failing when a run has no
    logger (``--trainer.logger false``)."""

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


EVALUATION_RECORD = "evaluation.json"  # in a test report's folder: the checkpoint, settings and subjects it scores
REPORT_TABLES = ("metrics.csv", "dice.csv")  # a folder holding either holds a test report


def _default_output_dir(trainer: pl.Trainer, name: str, checkpoint: str | None = None) -> Path:
    """``<run>/<name>`` next to the evaluated checkpoint's folder (``checkpoint``, else the
    trainer's), else under the root dir."""
    checkpoint = checkpoint or trainer.ckpt_path
    if checkpoint:
        return Path(checkpoint).resolve().parent.parent / name
    return Path(trainer.default_root_dir) / name


class LearningCurves(pl.Callback):
    """Draws ``learning_curves.png`` (training and validation loss, validation Dice per region)
    beside the checkpoints after every validation, whatever the logger, and keeps the points
    in ``learning_curves.json``.

    Args:
        output_dir: where to write; default: the checkpoint folder's parent (the run folder).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        self.output_dir = output_dir
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._loss_sum, self._loss_count = 0.0, 0
        self._drawn_points = -1  # how many points the last picture had: none is drawn twice

    def _points(self) -> int:
        return sum(len(points) for points in self.history.values())

    def _add(self, name: str, epoch: int, value: float) -> None:
        self.history.setdefault(name, []).append((epoch, float(value)))

    def state_dict(self) -> dict[str, Any]:
        """The points so far go into checkpoints, so a resumed run keeps its earlier epochs."""
        return {"history": {name: [[int(e), float(v)] for e, v in points] for name, points in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {name: [(int(e), float(v)) for e, v in points]
                        for name, points in state_dict.get("history", {}).items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach())
        self._loss_count += 1

    def _flush_training_loss(self, epoch: int) -> None:
        """The mean training loss since the last point (validation runs before the epoch ends)."""
        if self._loss_count:
            self._add("train/loss", epoch, self._loss_sum / self._loss_count)
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_training_loss(trainer.current_epoch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING:
            return  # ``train.py validate`` of a checkpoint must not redraw its run's curves as one point
        self._flush_training_loss(trainer.current_epoch)
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/"):
                self._add(name, trainer.current_epoch, value)
        self._draw(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.history and self._points() != self._drawn_points:
            self._draw(trainer, pl_module)  # the training loss after the last validation

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output_dir:
            directory = Path(self.output_dir)
        elif trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            directory = Path(trainer.checkpoint_callback.dirpath).parent
        else:
            directory = Path(trainer.default_root_dir)
        save_learning_curves_png(self.history, directory / "learning_curves.png",
                                 title=str(pl_module.hparams.get("network", "")))
        write_text_atomically(directory / "learning_curves.json", json.dumps(self.history, indent=1))
        self._drawn_points = self._points()


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` really is the last state.

    Lightning 2.6 refreshes ``last.ckpt`` after a validation only when a top-k checkpoint was
    saved at the same step: while the monitored Dice does not improve, ``last.ckpt`` stays at the
    best epoch, and resuming from it silently repeats epochs. Here it is written whenever
    Lightning considers saving (after every validation or training epoch).

    Evaluating a checkpoint (``validate``, ``test``, ``predict``) saves nothing, so the
    checkpoint's best score and top-k list are not restored: Lightning's warning that they cannot
    be, for a checkpoint evaluated outside the folder that trained it, said nothing to act on."""

    _fitting = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._fitting = stage == "fit"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fitting:
            super().load_state_dict(state_dict)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, at_epoch_end=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, at_epoch_end=False)

    def _refresh_last(self, trainer: pl.Trainer, at_epoch_end: bool) -> None:
        if (self.save_last and not self._should_skip_saving_checkpoint(trainer)
                and self._should_save_on_train_epoch_end(trainer) == at_epoch_end
                and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ResumeState(pl.Callback):
    """What Lightning does not keep in a checkpoint but an exact resume needs: the random number
    generators (torch, CUDA, NumPy, Python; the patch sampler and augmentation draw from torch's)
    and the W&B run id, so that ``--ckpt_path last.ckpt`` continues the same draws and the same
    W&B run (``train.py`` reads the id back)."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state_dict["python"])

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint[WANDB_RUN_ID] = logger.experiment.id


class ValidationImages(pl.Callback):
    """Logs the first validation subject's picture (three planes, ground truth and prediction
    over the first modality) as an image to W&B (offline runs too) or TensorBoard, at the
    first validation and every ``every_n_validations``-th after it.

    Args:
        every_n_validations: how often; 0 turns the images off.
    """

    def __init__(self, every_n_validations: int = 5) -> None:
        self.every_n_validations = every_n_validations
        self.validations = 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not self.every_n_validations:
            return
        self.validations += 1
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]
        if (self.validations - 1) % self.every_n_validations or not loggers or not trainer.is_global_zero:
            return
        subject = batch["subject"][0]
        with tempfile.TemporaryDirectory() as tmp:
            path = save_comparison_png(batch["image"][0, 0].float().cpu().numpy(), batch["label"][0, 0].cpu().numpy(),
                                       outputs["prediction"][0, 0].cpu().numpy(), pl_module.labels.class_names,
                                       Path(tmp) / "overlay.png", title=f"{subject}, epoch {trainer.current_epoch}")
            picture = (plt.imread(path)[..., :3] * 255).astype(np.uint8)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/overlay", [picture], step=trainer.global_step, caption=[subject])
            else:
                logger.experiment.add_image("val/overlay", picture, trainer.global_step, dataformats="HWC")


def format_dice_table(rows: Sequence[tuple[str, Sequence[float]]], regions: Sequence[str]) -> str:
    """A fixed-width table: one row per subject, one column per region plus their mean, and
    a final row of per-region means; NaN, if any, is left out of the means."""
    header = f"{'subject':<16}" + "".join(f"{r:>9}" for r in regions) + f"{'mean':>9}"
    lines = [header, "-" * len(header)]
    scores = np.array([s for _, s in rows], dtype=float).reshape(len(rows), len(regions))
    for (subject, _), values in zip(rows, scores, strict=True):
        lines.append(f"{subject:<16}" + "".join(f"{v:9.4f}" for v in values) + f"{np.nanmean(values):9.4f}")
    means = np.nanmean(scores, axis=0)
    lines += ["-" * len(header), f"{'mean':<16}" + "".join(f"{v:9.4f}" for v in means) + f"{np.nanmean(means):9.4f}"]
    return "\n".join(lines)


class TestReport(pl.Callback):
    """After ``test``: prints the per-subject, per-structure Dice table, writes it as
    ``dice.csv``; writes ``metrics.csv`` with the metric set of :mod:`core.metrics` per
    subject and structure (the same code as ``evaluate.py``), logs that table to W&B or
    TensorBoard, and draws one ``<subject>.png`` (three planes, ground truth and prediction)
    per subject; ``input_problems.csv`` names the subjects tested on scans unlike the training
    scans and what was said of them (:func:`core.segmenter.input_problems`).

    ``evaluation.json`` records what the report scores (the checkpoint's SHA-256, the inference
    settings, the data folder and its test subjects): a folder holding the report of another
    evaluation (``best.ckpt`` tested, then ``last.ckpt``, or another dataset) is refused before
    any subject is scored, never replaced; the same evaluation again replaces its own report.

    Args:
        output_dir: where to write; default ``test/`` beside the checkpoint's folder.
        save_png: whether to draw the pictures.
        lesion_wise: also the lesion-wise Dice and HD95 by which BraTS ranks from 2023 on, with
            that challenge's rule (``BraTS-GLI``, ... :data:`core.lesions.LESION_RULES`; or
            ``DILATION:MIN_VOLUME``), as ``evaluate.py --lesion-wise`` scores them: columns of
            ``metrics.csv`` and a table.
        overwrite: replace the report of another evaluation in ``output_dir``.
    """

    __test__ = False  # a Lightning callback, not a pytest class

    def __init__(self, output_dir: str | None = None, save_png: bool = True, lesion_wise: str | None = None,
                 overwrite: bool = False) -> None:
        self.output_dir = output_dir
        self.save_png = save_png
        self.lesion_wise = lesion_wise
        self.overwrite = overwrite
        self.checkpoint: str | None = None  # the checkpoint tested (train.py sets it: its folder checked at setup)
        self.directory: Path | None = None
        self.lesion_rule = None if lesion_wise is None else lesion_rule(lesion_wise)  # refused now, not after the test
        # subject -> (Dice, metric rows, what the input check said of its scans)
        self.subjects: dict[str, tuple[list[float], list[dict[str, Any]], list[str]]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = None
        if stage == "test" and self.checkpoint:  # known before the checkpoint is restored: checked before testing
            self._prepare(trainer, pl_module, self.checkpoint)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.subjects = {}
        if self.directory is None:  # a Trainer of one's own: the checkpoint is known once restored
            self._prepare(trainer, pl_module, trainer.ckpt_path)

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: str | None) -> None:
        self.directory = Path(self.output_dir) if self.output_dir else _default_output_dir(trainer, "test", checkpoint)
        self.evaluation = self._evaluation(trainer, pl_module, checkpoint)
        self.replaces = self._replaced_report()

    def _evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint_path: str | None
                    ) -> dict[str, Any]:
        """What this test scores: model (by its bytes) and inference settings, data and subjects."""
        checkpoint = checkpoint_identity(checkpoint_path) if checkpoint_path else {"checkpoint": None}
        model = {**pl_module.segmenter.settings(), **checkpoint, "flips": bool(getattr(pl_module, "flips", False))}
        datamodule = trainer.datamodule
        split = datamodule.split_summary() if hasattr(datamodule, "split_summary") else {}
        data = {"datamodule": type(datamodule).__name__, "data_dir": str(Path(split.get("data_dir", ".")).resolve())
                if split else None, "test_subjects": split.get("test")}
        evaluation = {"model": output_identity(model), "data": data, "lesion_wise": self.lesion_wise}
        return json.loads(json.dumps(evaluation, default=str))  # as it reads back

    def _replaced_report(self) -> bool:
        """Whether the folder holds a report this test replaces: refused (a DataError, before any
        subject is scored) when it is another evaluation's, unless ``overwrite``."""
        present, earlier = earlier_report(self.directory, REPORT_TABLES, EVALUATION_RECORD)
        if not present:
            return False
        if self.overwrite or earlier == self.evaluation:
            return True
        if not isinstance(earlier, dict):
            what = "a test whose evaluation is not recorded (written before reports recorded theirs)"
        else:
            data = earlier.get("data") or {}
            subjects = data.get("test_subjects")
            count = len(subjects) if isinstance(subjects, list) else "?"
            what = (f"another evaluation ({(earlier.get('model') or {}).get('checkpoint_sha256', '?')[:12]}... on "
                    f"{count} test subject{'' if count == 1 else 's'} of {data.get('data_dir')})")
        raise DataError(f"{self.directory}: holds the test report of {what}; refusing to replace it: choose another "
                        "folder (--test_report.output_dir) or pass --test_report.overwrite true")

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        subject = batch["subject"][0]
        labels = pl_module.labels
        prediction, truth = outputs["prediction"][0, 0].cpu().numpy(), batch["label"][0, 0].cpu().numpy()
        spacing = voxel_spacing(batch["affine"][0].cpu().numpy())
        diagonal = None  # a missing structure scores the scan's diagonal, as evaluate.py does, whatever the crop
        if "original_shape" in batch and "original_affine" in batch:
            diagonal = volume_diagonal(batch["original_shape"][0].tolist(),
                                       voxel_spacing(batch["original_affine"][0].cpu().numpy()))
        rows = subject_rows(subject, prediction, truth, spacing, labels.structure_classes, [IGNORE_INDEX],
                            self.lesion_rule, diagonal=diagonal)
        self.subjects[subject] = (outputs["dice"].tolist(), rows, list(getattr(pl_module, "input_problems", {})
                                                                        .get(subject, ())))
        if self.save_png:  # every process draws its own subjects
            save_comparison_png(batch["image"][0, 0].float().cpu().numpy(), truth, prediction, labels.class_names,
                                self.directory / f"{subject}.png", title=subject)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        subjects = gather_by_subject(self.subjects)  # each process holds its own subjects
        if not trainer.is_global_zero or not subjects:
            return
        structures = pl_module.labels.structure_names
        dice = [(name, scores) for name, (scores, _, _) in subjects.items()]
        metrics = [row for _, rows, _ in subjects.values() for row in rows]
        flagged = {name: problems for name, (_, _, problems) in subjects.items() if problems}
        dice_rows = [{"subject": name, **dict(zip(structures, scores, strict=True))} for name, scores in dice]
        write_text_atomically(self.directory / EVALUATION_RECORD, json.dumps(self.evaluation, indent=1))  # first
        write_text_atomically(self.directory / "dice.csv", csv_text(dice_rows, ["subject", *structures]))
        columns = score_columns(self.lesion_rule is not None)
        write_text_atomically(self.directory / "metrics.csv", csv_text(metrics, columns))
        if flagged:  # whose scores are not the model's on scans like its own, kept beside them
            write_text_atomically(self.directory / INPUT_PROBLEMS_CSV, csv_text(
                [{"subject": name, "problem": problem} for name, problems in flagged.items() for problem in problems],
                ["subject", "problem"]))
        elif self.replaces:  # the replaced report's, not this one's
            (self.directory / INPUT_PROBLEMS_CSV).unlink(missing_ok=True)
        table = [[row[c] for c in columns] for row in metrics]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("test/metrics", columns=columns, data=table)
            elif isinstance(logger, TensorBoardLogger):
                markdown = [columns, ["---"] * len(columns), *table]
                logger.experiment.add_text("test/metrics", "\n".join("| " + " | ".join(map(str, row)) + " |"
                                                                     for row in markdown))
        rank_zero_info("\nDice per subject and structure (whole volumes, hard labels, background excluded)\n"
                       + format_dice_table(dice, structures)
                       + "\n\nmean per structure\n" + text_table(summarise(metrics))
                       + (f"\n\n{lesion_table(metrics, self.lesion_wise)}" if self.lesion_wise else "")
                       + (f"\n{len(flagged)} of {len(subjects)} subjects were tested on scans unlike the training "
                          f"scans ({', '.join(flagged)}): {INPUT_PROBLEMS_CSV}" if flagged else "")
                       + f"\nwritten to {self.directory}\n")


class SegmentationWriter(BasePredictionWriter):
    """During ``predict``: writes ``<subject>_seg.nii.gz`` per subject in the scan's own
    space (its shape, affine and orientation: a volume reoriented or resampled for the network
    is mapped back, exactly for a pure reorientation, by nearest neighbour otherwise), in the
    dataset's own label values (e.g. 10/150/250 for iSeg); then ``volumes.csv``. The same
    files as ``predict.py``, through the same :class:`~core.export.PredictionFolder`.

    Region-based models predict class maps too (their regions painted back into classes by the
    label space), so BraTS' ET is written as 4, like any class.

    Args:
        output_dir: folder for the segmentations; default ``predictions/`` beside the
            checkpoint's folder.
        flips: test-time augmentation: average the probabilities over the 8 mirrorings
            (linked to the model's ``flips`` by ``train.py``).
        probabilities: also write ``<subject>_probabilities.nii.gz`` (one volume per class or region).
        overwrite: replace earlier predictions of the same subjects (never any other file).
        case_names: name each segmentation ``<case>.nii.gz`` (what BraTS takes as a submission),
            as ``predict.py --case-names`` does; not for a BIDS derivative.
        continue_prediction: after an interrupted run into ``output_dir``, keep the subjects it
            wrote whole and segment the others, as ``predict.py --continue-prediction`` does.
        keep_largest: structures (class names, or ``foreground``) cut to their largest connected
            component, as ``predict.py --keep-largest`` does (``evaluate.py --keep-largest-gains``
            says which gain).
    """

    def __init__(self, output_dir: str | None = None, flips: bool = False, probabilities: bool = False,
                 overwrite: bool = False, case_names: bool = False, continue_prediction: bool = False,
                 keep_largest: list[str] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.flips = flips
        self.probabilities = probabilities
        self.continue_prediction = continue_prediction
        self.overwrite = overwrite
        self.case_names = case_names
        self.keep_largest = list(keep_largest or [])
        self.folder: PredictionFolder | None = None
        self.checkpoint: str | None = None  # the checkpoint predicting (train.py sets it before setup)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """The output folder, checked as ``predict.py`` checks it, before any volume is read:
        nothing replaced that must not be (the inputs, files not ours, earlier predictions
        without ``overwrite``), a folder that can be written with room for the outputs."""
        if stage != "predict":
            return
        class_groups(pl_module.labels, self.keep_largest)  # a name the model lacks: said before any work
        directory = Path(self.output_dir) if self.output_dir else _default_output_dir(trainer, "predictions")
        subjects = getattr(trainer.datamodule, "predict_subjects", [])  # ours know theirs; other loaders: none
        names = getattr(trainer.datamodule, "output_names", OUR_NAMES)  # the dataset's convention (nnU-Net's)
        if self.case_names:
            names = named_by_case(names, type(trainer.datamodule).__name__, "prediction_writer.case_names")
        record = self._record(pl_module, self.checkpoint) if self.checkpoint else None  # else known at the start
        self.folder = PredictionFolder.for_subjects(directory, subjects, pl_module.labels.num_outputs,
                                                    self.probabilities, self.overwrite, names, record=record,
                                                    continuing=self.continue_prediction)
        if self.folder.finished:  # not segmented again: the DataModule reads the others only
            trainer.datamodule.predict_only([s for s in subjects if s.subject_id not in self.folder.finished])
        if self.continue_prediction:
            rank_zero_info(self.folder.continuing_note(len(subjects)))

    def _record(self, pl_module: pl.LightningModule, checkpoint: str | None) -> dict[str, Any]:
        identity = checkpoint_identity(checkpoint) if checkpoint else {"checkpoint": None}
        return {**pl_module.segmenter.settings(), **identity, "flips": bool(pl_module.flips),
                "probabilities": self.probabilities,
                **({"keep_largest": self.keep_largest} if self.keep_largest else {})}

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.folder is not None:  # the checkpoint is known once it is restored, after setup
            self.folder.record = self._record(pl_module, trainer.ckpt_path or self.checkpoint)
            for subject_id in self.folder.finished:
                self.folder.keep(subject_id, pl_module.labels)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        folder = self.folder
        groups = class_groups(pl_module.labels, self.keep_largest)
        for i, subject in enumerate(prediction["subject"]):
            grids = {k: prediction[k][i].cpu().numpy() for k in ("affine", "original_affine", "original_shape")
                     if k in prediction}
            probabilities = prediction["probabilities"][i].cpu().numpy() if self.probabilities else None
            classes = keep_largest(prediction["prediction"][i].cpu().numpy(), groups)
            segmentation = Segmentation.from_network_grid(subject, classes,
                                                          pl_module.labels, probabilities=probabilities,
                                                          note=pl_module.segmenter.note,
                                                          problems=prediction["problems"][i] if "problems" in
                                                          prediction else (),
                                                          **grids)
            rank_zero_info(f"wrote {folder.write(segmentation)}")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.folder is not None:
            self.folder.close()
            self.folder = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A run stopped by bad input still leaves the folder's tables and log for the subjects it
        wrote (not when the folder itself cannot be written)."""
        if self.folder is not None and not isinstance(exception, OutputError):
            folder, self.folder = self.folder, None
            try:
                folder.close()
            except Exception as error:  # the run's own error is the one to see; say this one beside it
                rank_zero_warn(f"{folder.directory}: the tables of the subjects written could not be written "
                               f"({error})", category=DataWarning)
