"""Weights & Biases logging set up for comparing runs, and the TensorBoard HParams metric."""

from __future__ import annotations

import numbers
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

MONITORED = "val/dice_mean"  # what checkpoints are chosen on, and what a run's "best" means


class RunLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with what comparing runs needs.

    - ``job_type`` (``fit``, ``validate``, ``test``, ``predict``: ``train.py`` fills it in from
      the subcommand), ``tags`` and ``group`` (a study's name) are W&B's own run fields, so runs
      can be filtered and grouped; ``train.py`` adds ``network:``, ``dataset:``, ``seed:`` and
      ``fold:`` tags.
    - Summaries hold the *best* ``val/dice_*`` (W&B ``define_metric``, ``{"max": ...}``) and the
      lowest losses (``{"min": ...}``), not the last values, and ``best/val/dice_mean``,
      ``best/epoch`` and ``best/step`` say how high ``val/dice_mean`` got and when.
    - ``validate``/``test`` of a checkpoint log into the run that trained it (its id is in the
      checkpoint; ``train.py`` resumes that run) and put their metrics into its summary as well;
      with ``evaluate_in_fit_run: false`` they start a run of their own whose config names the
      trained run (``evaluates_run``).
    - Lightning's model and DataModule arguments are logged under ``hparams`` (without its
      private ``_instantiator``) beside the nested CLI config ``train.py`` logs, and the deprecated
      ``anonymous`` setting is not passed to W&B (it warned on every run).

    Checkpoint artifacts: ``log_model: true`` uploads the best and last checkpoints when the run
    ends (online runs only), ``"all"`` every checkpoint as it is written; ``wandb sync`` uploads
    an offline run later.
    """

    def __init__(self, *args: Any, job_type: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, evaluate_in_fit_run: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, job_type=job_type, group=group, tags=list(tags or []), **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self.evaluate_in_fit_run = evaluate_in_fit_run
        self._best: float | None = None
        self._defined: set[str] = set()

    def discard(self) -> bool:
        """Finish and delete this process's offline run, without W&B's word on syncing it: for a
        command refused before any work (``train.py`` on a :class:`~core.io.DataError`), whose
        run holds nothing, so that nothing is left to sync or to mistake for an evaluation. An
        online run, or none started, is left as it is (False)."""
        run = self._experiment
        if run is None or not getattr(run, "offline", False):
            return False
        folder = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>
        if not folder.name.startswith("offline-run-"):  # not W&B's offline layout: nothing removed
            return False
        run._settings.silent = True  # W&B's footer would name the folder removed below
        run.finish(exit_code=2)
        self._experiment = None
        shutil.rmtree(folder, ignore_errors=True)
        for link in folder.parent.iterdir():  # W&B's latest-run and debug-log links into it
            if link.is_symlink() and Path(os.readlink(link)).parts[:1] == (folder.name,):
                link.unlink()
        return True

    @property
    def job_type(self) -> str | None:
        return self._wandb_init.get("job_type")

    def _define_summaries(self, keys: Any) -> None:
        """Dice summaries keep the maximum, losses the minimum (W&B ``define_metric``, declared
        per key at its first appearance: wandb-core ignores summaries of glob patterns)."""
        for key in keys:
            if key in self._defined or not isinstance(key, str):
                continue
            self._defined.add(key)
            summary = "max" if key.startswith("val/dice_") else "min" if key in ("val/loss", "train/loss") else None
            if summary:
                self.experiment.define_metric(key, step_metric="trainer/global_step", summary=summary)

    def log_hyperparams(self, params: Any) -> None:
        """Lightning's flat model and DataModule arguments go under ``hparams`` (the run's full
        config sits beside them, nested as the CLI has it)."""
        params = dict(params) if isinstance(params, Mapping) else dict(vars(params))
        super().log_hyperparams({"hparams": {k: v for k, v in params.items() if not str(k).startswith("_")}})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if pl.utilities.rank_zero_only.rank != 0:
            return
        if self.job_type in (None, "fit"):
            self._define_summaries(metrics)
        super().log_metrics(metrics, step)
        numbers_only = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Number)
                        or getattr(v, "ndim", None) == 0}
        if self.job_type not in (None, "fit"):  # an evaluation: its figures belong in the summary
            self.experiment.summary.update(numbers_only)
        value = numbers_only.get(MONITORED)
        if value is not None and (self._best is None or value > self._best):
            self._best = value
            self.experiment.summary.update({f"best/{MONITORED}": value, "best/epoch": numbers_only.get("epoch"),
                                            "best/step": step})


class HParamsMetric(pl.Callback):
    """TensorBoard's HParams tab shows ``hp_metric``, which Lightning leaves at -1: after every
    validation this logs the monitored Dice under that name to TensorBoard loggers."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(MONITORED)
        if value is None or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"hp_metric": float(value)}, step=trainer.global_step)
