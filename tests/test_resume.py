"""Exact resume: a fit stopped after a checkpoint and resumed from ``last.ckpt`` ends with the
weights of the uninterrupted fit (CPU, ``num_workers: 0``), keeps its learning-curve points, and
continues its W&B run."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from train import run_cli

from conftest import tiny_run_args

pytestmark = pytest.mark.slow  # fits of their own, interrupted and resumed


class Interrupted(RuntimeError):
    """Stands for a kill -9 after a checkpoint: nothing more is written."""


class StopAtEpoch(pl.Callback):
    def __init__(self, epoch: int = -1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"stopped at the start of epoch {self.epoch}")


def fit(data: Path, folder: Path, stop_at: int = -1, resume: Path | None = None, logger: list[str] | None = None):
    args = ["fit", "--config", "configs/demo.yaml", "--data.init_args.data_dir", str(data),
            "--data.init_args.val_subjects", "[subject-3]", "--data.init_args.test_subjects", "[subject-4]",
            "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.samples_per_volume", "2",
            "--data.init_args.cache_dir", str(folder.parent / "cache"), "--model.network_kwargs", "{base_features: 2}",
            "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(folder / "checkpoints"),
            "--trainer.callbacks", json.dumps([{"class_path": "test_resume.StopAtEpoch",
                                                 "init_args": {"epoch": stop_at}}]),
            *(logger or ["--trainer.logger", "false"]), *(["--ckpt_path", str(resume)] if resume else [])]
    return run_cli(args, save_config=False)


def test_a_resumed_fit_ends_where_the_uninterrupted_one_does(tiny_demo_dir: Path, tmp_path: Path) -> None:
    whole = fit(tiny_demo_dir, tmp_path / "whole")
    with pytest.raises(Interrupted):
        fit(tiny_demo_dir, tmp_path / "cut", stop_at=2)
    resumed = fit(tiny_demo_dir, tmp_path / "cut", resume=tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert resumed.trainer.current_epoch == whole.trainer.current_epoch == 3
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights
    curves = [json.loads((tmp_path / run / "learning_curves.json").read_text()) for run in ("whole", "cut")]
    assert curves[1] == curves[0] and [e for e, _ in curves[1]["val/dice_mean"]] == [0, 1, 2]


def test_a_finished_run_extended_by_more_epochs_trains_on_with_its_schedule_stretched(
        tiny_demo_dir: Path, trained_checkpoint: Path, tmp_path: Path) -> None:
    """``--ckpt_path last.ckpt --trainer.max_epochs`` more, after the run ended (the shared
    one-epoch run, continued into a folder of its own): the poly schedule runs to the new end. It
    used to keep the old end, so the extension trained at a rate of 0 and changed no weight."""
    before = torch.load(trained_checkpoint, weights_only=True)
    steps = before["global_step"]
    assert before["lr_schedulers"][0]["total_iters"] == steps
    assert before["optimizer_states"][0]["param_groups"][0]["lr"] == 0.0  # the end of its schedule
    extended = run_cli(tiny_run_args("fit", tiny_demo_dir, tmp_path, "--trainer.max_epochs", "2",
                                     "--ckpt_path", str(trained_checkpoint)), save_config=False)
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert extended.trainer.global_step == 2 * steps and after["lr_schedulers"][0]["total_iters"] == 2 * steps
    weights = [name for name, _ in extended.model.named_parameters() if name.endswith("weight") and "encoder" in name]
    assert weights and all(not torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in weights)


def test_a_resumed_fit_continues_its_wandb_run(tiny_demo_dir: Path, tmp_path: Path) -> None:
    import wandb

    logger = ["--trainer.logger.init_args.save_dir", str(tmp_path / "wandb")]
    with pytest.raises(Interrupted):
        fit(tiny_demo_dir, tmp_path / "cut", stop_at=1, logger=logger)
    wandb.finish()
    first = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"]
    resumed = fit(tiny_demo_dir, tmp_path / "cut", resume=tmp_path / "cut" / "checkpoints" / "last.ckpt",
                  logger=logger)
    assert resumed.trainer.logger.experiment.id == first
    wandb.finish()
