"""What a fit and the test of its checkpoint leave in offline W&B files, read back from the run
files themselves (scripts/wandb_readback.py): one run, job types fit and test, the full nested
config, tags, and summaries that hold the best Dice."""

from pathlib import Path

import pytest
import wandb

from scripts.wandb_readback import read_offline_run
from train import run_cli

from conftest import tiny_run_args

# One worker runs the module (make test: --dist loadgroup), so its fit and test run once, not once per worker.
pytestmark = pytest.mark.xdist_group("wandb_record")


def wandb_args(subcommand: str, data: Path, save_dir: Path, *extra: str) -> list[str]:
    """The tiny run with the default logger (offline W&B) under ``save_dir``."""
    return tiny_run_args(subcommand, data, None, *extra, logger=["--trainer.logger.init_args.save_dir", str(save_dir),
                                                                 "--trainer.logger.init_args.group", "study-x"])


@pytest.fixture(scope="module")
def fit_and_test(tiny_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    root = tmp_path_factory.mktemp("wandb_record")
    wandb.finish()  # a run another test left open would be reused by the fit
    try:
        run_cli(wandb_args("fit", tiny_demo_dir, root / "runs", "--trainer.max_epochs", "3",
                           "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
                           "--checkpoint.dirpath", str(root / "checkpoints")))
        wandb.finish()
        run_cli(wandb_args("test", tiny_demo_dir, root / "runs", "--ckpt_path", str(root / "checkpoints" / "best.ckpt"),
                           "--test_report.output_dir", str(root / "test"), "--test_report.save_png", "false"))
    finally:
        wandb.finish()
    fit, test = sorted((root / "runs" / "wandb").glob("offline-run-*"))
    return read_offline_run(fit), read_offline_run(test), root


def test_the_test_logs_into_the_run_that_trained_the_checkpoint(fit_and_test: tuple[dict, dict, Path]) -> None:
    fit, test, root = fit_and_test
    assert fit["id"] == test["id"] and (fit["job_type"], test["job_type"]) == ("fit", "test")
    assert fit["group"] == test["group"] == "study-x"
    assert {"network:unet3d", "dataset:ISeg2017", "seed:0"} <= set(fit["tags"])
    assert test["config"]["evaluated_checkpoint"] == str(root / "checkpoints" / "best.ckpt")
    assert 0.0 <= test["summary"]["test/dice_mean"] <= 1.0


def test_the_config_is_nested_and_complete(fit_and_test: tuple[dict, dict, Path]) -> None:
    config = fit_and_test[0]["config"]
    assert config["model"]["network"] == "unet3d" and config["model"]["network_kwargs"] == {"base_features": 2}
    assert config["trainer"]["max_epochs"] == 3 and config["seed_everything"] == 0
    assert config["data"]["init_args"]["val_subjects"] == ["subject-3"]
    assert config["split"]["test"] == ["subject-4"] and len(config["code"]["commit"]) == 40
    assert "_instantiator" not in config and "_instantiator" not in config["hparams"]
    assert config["hparams"]["network"] == "unet3d"  # Lightning's own hyperparameters, kept apart


def test_summaries_hold_the_best_dice_and_when_it_was_reached(fit_and_test: tuple[dict, dict, Path]) -> None:
    fit = fit_and_test[0]
    history = fit["history"]["val/dice_mean"]
    assert len(history) == 3
    best = max(history)
    assert fit["summary"]["val/dice_mean"] == {"max": pytest.approx(best)}  # the best, not the last
    assert fit["summary"]["val/dice_CSF"] == {"max": pytest.approx(max(fit["history"]["val/dice_CSF"]))}
    assert fit["summary"]["best/val/dice_mean"] == pytest.approx(best)
    assert fit["summary"]["best/epoch"] == history.index(best)
    assert fit["summary"]["train/loss"] == {"min": pytest.approx(min(fit["history"]["train/loss"]))}


def test_an_evaluation_can_have_a_run_of_its_own_linked_to_the_trained_one(
        fit_and_test: tuple[dict, dict, Path], tiny_demo_dir: Path, tmp_path: Path) -> None:
    fit, _, root = fit_and_test
    wandb.finish()
    try:
        run_cli(wandb_args("validate", tiny_demo_dir, tmp_path / "runs", "--ckpt_path",
                           str(root / "checkpoints" / "best.ckpt"), "--trainer.logger.init_args.evaluate_in_fit_run",
                           "false"))
    finally:
        wandb.finish()
    (folder,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    own = read_offline_run(folder)
    assert own["id"] != fit["id"] and own["job_type"] == "validate"
    assert own["config"]["evaluates_run"] == fit["id"]


def test_a_refused_evaluation_leaves_no_run_to_sync(fit_and_test: tuple[dict, dict, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``train.py test`` refused before any work (no subjects where it was pointed; Lightning has
    started the W&B run by then): no offline run is left that would add an empty evaluation to the
    trained run when synced, and W&B's advice to sync it is not printed after the error."""
    from core.io import DataError

    root = fit_and_test[2]
    (tmp_path / "empty").mkdir()
    wandb.finish()
    try:
        with pytest.raises(DataError, match="no iSeg subjects found"):
            run_cli(wandb_args("test", tmp_path / "empty", tmp_path / "runs", "--ckpt_path",
                               str(root / "checkpoints" / "best.ckpt"), "--test_report.save_png", "false"))
    finally:
        wandb.finish()
    said = capsys.readouterr().err
    assert "offline-run-" in said and "wandb sync" not in said  # W&B had started it (its first lines say where)
    assert list((tmp_path / "runs" / "wandb").iterdir()) == []  # the run and W&B's links into it are gone
    assert len(list((root / "runs" / "wandb").glob("offline-run-*"))) == 2  # the fit's and the test's, untouched
