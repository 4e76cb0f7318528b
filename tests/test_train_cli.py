"""End to end through train.py's LightningCLI on a tiny synthetic demo set."""

import copy
import csv
import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from core.io import DataError, DataWarning
from lightning_modules import SegmentationModule
from train import SegmentationCLI, run_cli

from conftest import csv_logger, tiny_run_args
from network_cases import SETTINGS, SMALL


def cli(subcommand: str, data_dir: Path, run_dir: Path, *extra: str, wandb: bool = False) -> SegmentationCLI:
    """Run train.py's CLI on the tiny demo set: CSV logs under ``run_dir/logs`` or, with
    ``wandb``, the default offline W&B logger under ``run_dir/runs`` with the config saved."""
    logger = ["--trainer.logger.save_dir", str(run_dir / "runs")] if wandb else csv_logger(run_dir)
    return run_cli(tiny_run_args(subcommand, data_dir, run_dir, *extra, logger=logger), save_config=wandb)


@pytest.fixture
def trained(trained_run: Path) -> Path:
    """The shared one-epoch run (``conftest.trained_run``), CSV logs under ``logs/``."""
    return trained_run


def test_fit_writes_best_and_last_checkpoints_with_the_data_settings(trained: Path) -> None:
    assert (trained / "checkpoints" / "best.ckpt").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    model = SegmentationModule.load_from_checkpoint(trained / "checkpoints" / "best.ckpt")
    assert model.hparams.in_channels == 2 and model.labels.num_classes == 4
    assert model.hparams.label_space["classes"] == {"background": 0, "CSF": 10, "GM": 150, "WM": 250}
    assert model.hparams.modalities == ["T1", "T2"] and model.labels.class_values == (0, 10, 150, 250)
    assert tuple(model.hparams.roi_size) == (16, 16, 16)
    metrics = (next((trained / "logs").rglob("version_0/metrics.csv"))).read_text()  # the fit's
    for name in ("val/dice_CSF", "val/dice_GM", "val/dice_WM", "val/dice_mean", "train/loss"):
        assert name in metrics
    # Learning curves beside the checkpoints: one point per epoch (train) and per validation.
    assert (trained / "learning_curves.png").stat().st_size > 10_000
    curves = json.loads((trained / "learning_curves.json").read_text())
    assert [epoch for epoch, _ in curves["train/loss"]] == list(range(len(curves["train/loss"])))
    assert len(curves["val/dice_mean"]) >= 1 and all(0 <= v <= 1 for _, v in curves["val/dice_mean"])
    assert {"val/loss", "val/dice_CSF", "val/dice_GM", "val/dice_WM"} <= set(curves)


def test_checkpoints_record_the_run_config_command_and_code(trained: Path) -> None:
    """Every CLI key (seed and trainer settings too) as a nested dict, plain types only, so a
    run is described by its checkpoint alone (compare_runs.py reads it)."""
    record = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["run_record"]
    config = record["config"]
    assert config["model"]["network"] == "unet3d" and config["model"]["network_kwargs"] == {"base_features": 2}
    assert config["trainer"]["max_epochs"] == 1 and config["seed_everything"] == 0
    assert config["data"]["init_args"]["patch_size"] == [16, 16, 16]
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert record["command"][0] == "fit" and "--trainer.max_epochs" in record["command"]
    assert re.fullmatch(r"[0-9a-f]{40}", record["code"]["commit"]) and isinstance(record["code"]["dirty"], bool)


def test_the_configs_dumped_without_validating_again_are_lightnings_validated_ones(
        tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's saved hyperparameters (``_dump_config``) and the checkpoint's run record skip
    the second validation and the YAML round trip: the same dicts as Lightning's way."""
    from pytorch_lightning.cli import LightningCLI

    dumps = {}

    def both(self: SegmentationCLI) -> None:  # when the data is built: ours, then Lightning's
        if not dumps:
            ours(self)
            dumps["ours"] = copy.deepcopy(self.config_dump)  # Lightning adds the links' values to it later
            del self.config_dump
            LightningCLI._dump_config(self)
            dumps["lightning"] = copy.deepcopy(self.config_dump)

    ours = SegmentationCLI._dump_config
    monkeypatch.setattr(SegmentationCLI, "_dump_config", both)
    monkeypatch.setattr(SegmentationCLI, "_run_subcommand", lambda self, subcommand: None)
    built = run_cli(tiny_run_args("fit", tiny_demo_dir, tmp_path, "--trainer.max_epochs", "3"), save_config=False)
    assert dumps["ours"] == dumps["lightning"] and dumps["ours"]["model"]["network_kwargs"] == {"base_features": 2}
    assert dumps["ours"]["model"]["roi_size"] == [16, 16, 16]  # a link target, kept for the hyperparameters
    assert built.model.hparams.in_channels == 2 and built.datamodule.hparams.patch_size == [16, 16, 16]
    validated = yaml.safe_load(built._parser("fit").dump(built.config["fit"], skip_unset=False))
    assert built.run_record()["config"] == validated and validated["trainer"]["max_epochs"] == 3


def test_validating_a_checkpoint_leaves_its_runs_learning_curves_as_they_are(trained: Path, tiny_demo_dir: Path
                                                                              ) -> None:
    """``train.py validate`` of a run's checkpoint once redrew that run's ``learning_curves.png``
    and ``.json`` as its own single point, the training's curves lost."""
    curves = {name: (trained / name).read_bytes() for name in ("learning_curves.png", "learning_curves.json")}
    assert len(json.loads(curves["learning_curves.json"])["train/loss"]) == 1  # the fit's epoch
    best = trained / "checkpoints" / "best.ckpt"
    run = run_cli(tiny_run_args("validate", tiny_demo_dir, None, "--ckpt_path", str(best)), save_config=False)
    assert 0.0 <= float(run.trainer.callback_metrics["val/dice_mean"]) <= 1.0
    assert {name: (trained / name).read_bytes() for name in curves} == curves


def test_checkpoint_reload_gives_identical_predictions(trained: Path) -> None:
    path = trained / "checkpoints" / "last.ckpt"
    first = SegmentationModule.load_from_checkpoint(path).eval()
    second = SegmentationModule.load_from_checkpoint(path).eval()
    image = torch.randn(1, 2, 20, 18, 17)
    with torch.no_grad():
        a, b = first.predict_logits(image), second.predict_logits(image)
    assert torch.equal(a, b)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # tensors and plain types only
    assert all(torch.equal(state[k], v) for k, v in first.state_dict().items())


def test_a_test_report_is_never_replaced_by_another_evaluations(trained: Path, tiny_demo_dir: Path,
                                                                 tmp_path: Path) -> None:
    """``evaluation.json`` says what a report scores; the same test again replaces its own report,
    another evaluation into that folder (other subjects, another checkpoint, a report that does
    not say) is one line before any subject is scored, unless ``--test_report.overwrite true``."""
    import hashlib

    best, out = trained / "checkpoints" / "best.ckpt", tmp_path / "report"

    def test(*extra: str, subjects: str = "[subject-4]", checkpoint: Path = best) -> None:
        run_cli(tiny_run_args("test", tiny_demo_dir, None, "--ckpt_path", str(checkpoint), "--test_report.output_dir",
                              str(out), "--test_report.save_png", "false", *extra, test=subjects), save_config=False)

    def report() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    test()
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model"]["checkpoint_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert evaluation["data"]["test_subjects"] == ["subject-4"] and evaluation["model"]["window_scale"] == 2
    assert evaluation["data"]["data_dir"] == str(tiny_demo_dir.resolve())
    first = report()
    test()  # the same evaluation again: its own report, the same figures
    assert report() == first
    other = tmp_path / "other.ckpt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    name = next(k for k in state["state_dict"] if k.endswith("weight"))
    state["state_dict"][name] = state["state_dict"][name] + 0.5
    torch.save(state, other)
    for extra, subjects, checkpoint in (((), "[subject-2]", best), ((), "[subject-4]", other),
                                        (("--model.window_scale", "1"), "[subject-4]", best)):
        refusal = (rf"{out}: holds the test report of another evaluation \([0-9a-f]{{12}}\.\.\. on 1 test subject of "
                   r".*\); refusing to replace it: choose another folder \(--test_report.output_dir\) or pass "
                   r"--test_report.overwrite true")
        with pytest.raises(DataError, match=refusal):
            test(*extra, subjects=subjects, checkpoint=checkpoint)
        assert report() == first
    test("--test_report.overwrite", "true", subjects="[subject-2]")
    assert json.loads((out / "evaluation.json").read_text())["data"]["test_subjects"] == ["subject-2"]
    assert (out / "dice.csv").read_text().splitlines()[1].startswith("subject-2,")
    (out / "evaluation.json").unlink()  # a report written before reports recorded their evaluation
    with pytest.raises(DataError, match="holds the test report of a test whose evaluation is not recorded"):
        test(subjects="[subject-2]")


def test_a_trainer_of_ones_own_checks_the_report_folder_once_the_checkpoint_is_restored(
        trained: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    """Without train.py telling it the checkpoint, TestReport learns it from the Trainer once
    restored, at the test epoch's start: the same record, the same refusal."""
    import hashlib

    from lightning_modules.callbacks import TestReport

    out, best, last = tmp_path / "report", trained / "checkpoints" / "best.ckpt", trained / "checkpoints" / "last.ckpt"
    built = run_cli(tiny_run_args("test", tiny_demo_dir, None, "--test_report.output_dir", str(out),
                                  "--test_report.save_png", "false")[1:], save_config=False, run=False)
    (report,) = [c for c in built.trainer.callbacks if isinstance(c, TestReport)]
    assert report.checkpoint is None
    built.trainer.test(built.model, datamodule=built.datamodule, ckpt_path=str(best))
    record = json.loads((out / "evaluation.json").read_text())
    assert record["model"]["checkpoint_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert hashlib.sha256(last.read_bytes()).digest() != hashlib.sha256(best.read_bytes()).digest()
    with pytest.raises(DataError, match=f"{out}: holds the test report of another evaluation"):
        built.trainer.test(built.model, datamodule=built.datamodule, ckpt_path=str(last))


def test_an_evaluation_without_a_logger_saves_its_config_in_the_evaluated_run_not_the_current_folder(
        tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.py validate/test --trainer.logger false`` saved ``<stage>-config.yaml`` into the
    folder it was started from (a repository's root collected them); now beside the evaluated
    checkpoint's run, never over an earlier one."""
    run = tmp_path / "run"
    cli("fit", tiny_demo_dir, run, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = run / "checkpoints" / "last.ckpt"
    args = [a if a != "configs/demo.yaml" else str(Path(__file__).resolve().parents[1] / a)
            for a in tiny_run_args("validate", tiny_demo_dir, None, "--ckpt_path", str(checkpoint))]
    monkeypatch.chdir(elsewhere)
    for _ in range(2):
        run_cli(args)
    assert list(elsewhere.iterdir()) == []
    saved = sorted(p.name for p in run.glob("validate-config*.yaml"))
    assert saved == ["validate-config-2.yaml", "validate-config.yaml"]
    assert f"ckpt_path: {checkpoint}" in (run / "validate-config.yaml").read_text()


def test_test_reports_dice_per_subject_and_draws_a_png(trained: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    ckpt = trained / "checkpoints" / "best.ckpt"
    out = tmp_path / "report"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = cli("test", tiny_demo_dir, tmp_path, "--ckpt_path", str(ckpt), "--test_report.output_dir", str(out))
    # Trained in another folder: no note that the checkpoint callback's top-k state is not reloaded.
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    logged = run.trainer.callback_metrics
    rows = (out / "dice.csv").read_text().splitlines()
    assert rows[0] == "subject,CSF,GM,WM"
    assert rows[1].startswith("subject-4,")
    per_region = [float(v) for v in rows[1].split(",")[1:]]
    for name, value in zip(("CSF", "GM", "WM"), per_region, strict=True):
        assert logged[f"test/dice_{name}"].item() == pytest.approx(value, abs=1e-5)
        assert 0.0 <= value <= 1.0
    assert (out / "subject-4.png").stat().st_size > 10_000
    # The challenges' metric set, from the same code as evaluate.py; its Dice is the logged Dice.
    with open(out / "metrics.csv") as handle:
        metrics = {row["structure"]: row for row in csv.DictReader(handle)}
    assert set(metrics) == {"CSF", "GM", "WM"}
    for name, value in zip(("CSF", "GM", "WM"), per_region, strict=True):
        assert float(metrics[name]["dice"]) == pytest.approx(value, abs=1e-5)
        assert float(metrics[name]["hd95_mm"]) >= 0 and float(metrics[name]["assd_mm"]) >= 0
        assert float(metrics[name]["avd_percent"]) >= 0


def test_test_logs_the_metric_table_to_offline_wandb(trained: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    import wandb

    ckpt = trained / "checkpoints" / "best.ckpt"
    try:
        cli("test", tiny_demo_dir, tmp_path, "--ckpt_path", str(ckpt), "--test_report.output_dir",
            str(tmp_path / "r"), "--test_report.save_png", "false", wandb=True)
    finally:
        wandb.finish()  # `test` leaves its run open; the next W&B test must start its own
    tables = list((tmp_path / "runs").rglob("metrics_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["subject", "structure", "dice", "hd95_mm", "assd_mm", "avd_percent",
                                "sensitivity"]
    assert [row[1] for row in table["data"]] == ["CSF", "GM", "WM"]


def test_predict_writes_segmentations_in_the_input_space(trained: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions"
    cli("predict", tiny_demo_dir, tmp_path, "--ckpt_path", str(trained / "checkpoints" / "best.ckpt"),
        "--prediction_writer.output_dir", str(out))
    written = nib.load(str(out / "subject-4_seg.nii.gz"))
    source = nib.load(str(tiny_demo_dir / "subject-4-T1.hdr"))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 10, 150, 250}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_default_logger_is_offline_wandb_with_the_config_saved(tiny_demo_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    try:
        cli("fit", tiny_demo_dir, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--trainer.check_val_every_n_epoch", "1", wandb=True)
    finally:
        wandb.finish()  # the next W&B test must start its own run
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    saved = runs[0] / "files" / "fit-config.yaml"
    assert "ISeg2017DataModule" in saved.read_text()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # The validation picture, logged as an image even offline.
    (image,) = (runs[0] / "files" / "media" / "images" / "val").glob("overlay_*.png")
    assert image.stat().st_size > 10_000


def test_tensorboard_gets_the_validation_picture(tiny_demo_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli("fit", tiny_demo_dir, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "pytorch_lightning.loggers.TensorBoardLogger",
        "--trainer.logger.save_dir", str(tmp_path / "tb"))
    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent)).Reload()
    assert "val/overlay" in accumulator.Tags()["images"]
    # The HParams tab's metric is the monitored Dice, not Lightning's placeholder -1.
    (hp,) = accumulator.Scalars("hp_metric")[-1:]
    (dice,) = accumulator.Scalars("val/dice_mean")[-1:]
    assert hp.value == pytest.approx(dice.value) and hp.value != -1


def test_bf16_mixed_precision_trains_and_validates(tiny_demo_dir: Path, tmp_path: Path) -> None:
    run = cli("fit", tiny_demo_dir, tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1")
    assert run.trainer.precision == "bf16-mixed"
    assert torch.isfinite(run.trainer.callback_metrics["val/dice_mean"])
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_network_trains_through_the_cli_with_its_preset(name: str, tiny_demo_dir: Path, tmp_path: Path) -> None:
    kwargs, patch = dict(SMALL[name][0]), list(SETTINGS[name].patch_size)
    run = cli("fit", tiny_demo_dir, tmp_path, "--config", f"configs/models/{name}.yaml",
              "--model.network_kwargs", json.dumps(kwargs), "--data.init_args.patch_size", json.dumps(patch),
              "--model.inference_roi_size", "null", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
              "--trainer.log_every_n_steps", "1")
    assert run.model.hparams.network == name
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert 0.0 <= run.trainer.callback_metrics["val/dice_mean"].item() <= 1.0
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_densenet_preset_trains_on_32_cubes_and_infers_on_64_cubes(tiny_demo_dir: Path, tmp_path: Path) -> None:
    run = cli("fit", tiny_demo_dir, tmp_path, "--config", "configs/models/densenet3d.yaml",
              "--data.init_args.patch_size", "[32, 32, 32]", "--model.network_kwargs",
              '{"kernels": [4, 4, 8], "fully_connected": [8]}', "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
              "--trainer.check_val_every_n_epoch", "1")
    assert run.datamodule.patch_size == (32, 32, 32)
    assert tuple(run.model.hparams.inference_roi_size) == (64, 64, 64)
    assert torch.isfinite(run.trainer.callback_metrics["val/dice_mean"])


THESIS_NETWORKS = ["vnet", "vnet_light", "unet3d", "densenet3d", "densenet3d_late_fusion", "densenet3d_early_fusion"]


@pytest.mark.parametrize("network", THESIS_NETWORKS)
def test_thesis_experiment_configs_compose_with_every_thesis_network(network: str) -> None:
    run = run_cli(["--config", "configs/datasets/iseg2017.yaml", "--config", "configs/experiments/iseg2017.yaml",
                   "--config", f"configs/models/{network}.yaml", "--trainer.logger.init_args.name", network],
                  save_config=False, run=False)
    hp = run.model.hparams
    assert hp.network == network and hp.in_channels == 2 and hp.modalities == ["T1", "T2"]
    optimizer = run.model.configure_optimizers()  # lr_scheduler null: the optimiser alone, constant rate
    assert type(optimizer) is torch.optim.SGD and run.datamodule.batch_size == 1
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (
        1e-3, 0.9, 1e-8)
    patch = (32, 32, 32) if network.startswith("densenet") else (64, 128, 128)
    assert run.datamodule.patch_size == patch and tuple(hp.roi_size) == patch
    assert run.config.trainer.logger.init_args.name == network and run.trainer.logger.name == "brain-mri-segmentation"


@pytest.fixture(scope="module")
def parser():
    """The CLI's parser (no subcommand), built once: the configs below are parsed, not run."""
    return run_cli(["--config", "configs/demo.yaml", "--data.init_args.cache_dir", "null"], run=False,
                   save_config=False).parser


def test_batch_limits_are_integers_or_fractions_as_written(parser) -> None:
    """Lightning declares them float | int: ``--trainer.limit_val_batches 1`` used to mean 100 %."""
    trainer = parser.parse_args(["--config", "configs/demo.yaml", "--trainer.limit_val_batches", "1",
                                 "--trainer.limit_train_batches", "0.25",
                                 "--trainer.limit_test_batches", "3"]).trainer
    assert (trainer.limit_val_batches, trainer.limit_train_batches, trainer.limit_test_batches) == (1, 0.25, 3)
    assert type(trainer.limit_val_batches) is int and type(trainer.limit_train_batches) is float


def test_mrbrains_experiment_config_states_the_thesis_setting(parser) -> None:
    config = parser.parse_args(["--config", "configs/datasets/mrbrains18.yaml",
                                "--config", "configs/experiments/mrbrains18.yaml"])
    data = config.data.init_args
    assert config.data.class_path == "datamodules.MRBrainS18DataModule" and data.label_mode == "thesis"
    assert data.modalities == ["T1", "IR", "FLAIR"] and data.patch_size == (128, 128, 32)
    assert (data.batch_size, data.samples_per_volume, data.sampling) == (1, 100, "foreground")
    optimizer = config.model.optimizer
    assert optimizer.class_path == "torch.optim.SGD" and config.model.lr_scheduler is None
    assert (optimizer.init_args.lr, optimizer.init_args.weight_decay) == (1e-3, 1e-8)


@pytest.mark.parametrize(("preset", "expected"), [
    ("default", {"log_every_n_steps": 10}),
    ("debug", {"limit_train_batches": 2, "limit_val_batches": 1, "logger": False}),
    ("overfit", {"overfit_batches": 1}),
    ("ddp", {"strategy": "ddp", "sync_batchnorm": True}),
    ("slurm", {"strategy": "ddp", "num_nodes": 1}),
    ("bf16", {"precision": "bf16-mixed"}),
])
def test_trainer_presets_compose_with_any_config(parser, preset: str, expected: dict) -> None:
    """Parsed only (a GPU preset cannot build its Trainer on a CPU machine)."""
    trainer = parser.parse_args(["--config", "configs/demo.yaml", "--config", f"configs/trainer/{preset}.yaml"]).trainer
    for key, value in expected.items():
        assert trainer[key] == value and type(trainer[key]) is type(value)  # 1 batch, not 1.0 = 100 %
    # Whatever the preset, the defaults file is loaded first: the learning-rate monitor is on.
    assert trainer.callbacks[0].class_path.endswith("OptionalLearningRateMonitor")
    plugins = {plugin.class_path.rsplit(".", 1)[1]: plugin for plugin in trainer.plugins}
    assert "AtomicCheckpointIO" in plugins  # every preset keeps the atomic checkpoint writer
    if preset == "slurm":
        assert plugins["SLURMEnvironment"].init_args.auto_requeue is True


def test_network_options_are_listed_by_the_cli_and_checked_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        run_cli(["fit", "--network_help", "densenet3d"], save_config=False)
    assert exit_code.value.code == 0
    assert "kernels: Sequence[int] = (25, 25, 25, 50, 50, 50, 75, 75, 75)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_code:
        run_cli(["fit", "--config", "configs/demo.yaml", "--model.network_kwargs", "{base_feature: 8}"],
                save_config=False)
    assert exit_code.value.code == 2
    assert "model: network 'unet3d' has no option 'base_feature'; its options: base_features" in capsys.readouterr().err


def test_a_command_builds_its_own_subcommand_parser_and_help_lists_all_four(
        trained: Path, tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each subcommand's parser holds the whole Trainer, model and data signature: a command line
    led by its subcommand builds that one only."""
    run = cli("validate", tiny_demo_dir, tmp_path, "--ckpt_path", str(trained / "checkpoints" / "best.ckpt"))
    assert set(run._subcommand_parsers) == {"validate"} and run.subcommand == "validate"
    assert 0.0 <= run.trainer.callback_metrics["val/dice_mean"].item() <= 1.0
    with pytest.raises(SystemExit) as exit_code:  # not led by a subcommand: all four, as Lightning builds them
        run_cli(["--help"], save_config=False)
    assert exit_code.value.code == 0
    listed = capsys.readouterr().out
    assert all(re.search(rf"^\s+{name}\s", listed, re.MULTILINE) for name in ("fit", "validate", "test", "predict"))
    with pytest.raises(SystemExit) as exit_code:
        run_cli(["fitt"], save_config=False)
    assert exit_code.value.code == 2
    assert "invalid choice: 'fitt' (choose from 'fit', 'validate', 'test', 'predict')" in capsys.readouterr().err


def test_inference_settings_given_win_over_the_checkpoints_and_another_network_is_said(
        trained: Path, tiny_demo_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``train.py test --ckpt_path``: the checkpoint decides the network; the window, overlap,
    window batch and weight layout given on the command line (even at the default's value) or in
    a config are used, and said. Before, they were dropped for the checkpoint's in silence."""
    best = str(trained / "checkpoints" / "best.ckpt")
    report = ["--test_report.save_png", "false", "--test_report.output_dir"]  # not beside the shared checkpoint
    plain = cli("test", tiny_demo_dir, tmp_path / "plain", "--ckpt_path", best, *report,
                str(tmp_path / "plain" / "test")).model.segmenter
    assert (plain.roi_size, plain.sw_overlap, plain.sw_batch_size, plain.window_scale) == ((16, 16, 16), 0.5, 4, 2)
    assert plain.window((27, 33, 29)) == (32, 32, 32)  # the checkpoint's settings (configs/demo.yaml's)
    with caplog.at_level("INFO"), pytest.warns(DataWarning, match=r"model\.network_kwargs: the checkpoint's "
                                               r"\{'base_features': 2\} is used, not \{'base_features': 4\} as given"):
        run = cli("test", tiny_demo_dir, tmp_path / "given", "--ckpt_path", best, "--model.sw_overlap", "0.25",
                  "--model.inference_roi_size", "[24, 24, 24]", "--model.sw_batch_size", "2",
                  "--model.window_scale", "1", "--model.network_kwargs", "{base_features: 4}", *report,
                  str(tmp_path / "given" / "test"))
    given = run.model.segmenter
    assert (given.roi_size, given.sw_overlap, given.sw_batch_size, given.window_scale) == ((24, 24, 24), 0.25, 2, 1)
    assert given.window((27, 33, 29)) == (24, 24, 24)
    assert "model.window_scale: 1 as given, not the checkpoint's 2" in caplog.text
    assert "model.sw_overlap: 0.25 as given, not the checkpoint's 0.5" in caplog.text
    assert "model.inference_roi_size: [24, 24, 24] as given, not the checkpoint's None" in caplog.text
    assert "model.sw_batch_size: 2 as given, not the checkpoint's 4" in caplog.text  # 2 is the default, but named
    assert run.model.hparams.network_kwargs == {"base_features": 2}  # the weights' network
    assert 0.0 <= run.trainer.callback_metrics["test/dice_mean"].item() <= 1.0
    # Any other option the weights were trained with is the checkpoint's too, and said: the loss.
    with pytest.warns(DataWarning, match=r"model\.loss: the checkpoint's dice_ce is used, not ce as given: "
                                         r".*best\.ckpt was trained so"):
        run = cli("test", tiny_demo_dir, tmp_path / "loss", "--ckpt_path", best, "--model.loss", "ce", *report,
                  str(tmp_path / "loss" / "test"))
    assert run.model.hparams.loss == "dice_ce"


def test_every_fit_gets_its_own_run_folder(tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``{run}`` in checkpoint.dirpath: a second fit never replaces the first one's best.ckpt;
    ``latest`` points at the newest run; resuming stays in its run; a folder holding another
    run's checkpoints is refused."""
    monkeypatch.delenv("BRAINSEG_RUN_ID", raising=False)
    runs = tmp_path / "runs"
    args = ["fit", "--config", "configs/demo.yaml", "--data.init_args.data_dir", str(tiny_demo_dir),
            "--data.init_args.val_subjects", "[subject-3]", "--data.init_args.test_subjects", "[subject-4]",
            "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.samples_per_volume", "1",
            "--data.init_args.cache_dir", str(tmp_path / "cache"), "--model.network_kwargs", "{base_features: 2}",
            "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(runs / "{run}" / "checkpoints")]
    first = run_cli(args).trainer.checkpoint_callback.dirpath
    best = Path(first) / "best.ckpt"
    before = best.read_bytes()
    config = Path(first).parent / "fit-config.yaml"  # no logger: the config goes into the run folder
    assert "max_epochs: 1" in config.read_text()
    second = run_cli(args, save_config=False).trainer.checkpoint_callback.dirpath
    assert Path(first).parent.parent == Path(second).parent.parent == runs and first != second
    assert best.read_bytes() == before  # the first run's files are untouched
    assert (runs / "latest").resolve() == Path(second).parent.resolve()
    assert f"run folder: {Path(second).parent}" in capsys.readouterr().out
    resumed = run_cli([*args, "--trainer.max_epochs", "2", "--ckpt_path", str(Path(first) / "last.ckpt")])
    assert resumed.trainer.checkpoint_callback.dirpath == first and resumed.trainer.current_epoch == 2
    assert "max_epochs: 1" in config.read_text()  # the first config is kept; the resumed one beside it
    assert "max_epochs: 2" in (config.parent / "fit-config-2.yaml").read_text()
    explicit = [*args[:-1], first]
    with pytest.raises(SystemExit) as exit_code:
        run_cli(explicit, save_config=False)
    assert exit_code.value.code == 2 and "already holds the checkpoints of another run" in capsys.readouterr().err
    # A fit that fails before its first checkpoint (no data here) takes its run folder back:
    # latest still names the last run that trained.
    (tmp_path / "empty").mkdir()
    trained_last = (runs / "latest").resolve()
    assert trained_last == Path(first).parent.resolve()  # the resumed run
    with pytest.raises(DataError, match="no iSeg subjects found"):
        run_cli([*args, "--data.init_args.data_dir", str(tmp_path / "empty")], save_config=False)
    assert sorted(p.name for p in runs.iterdir()) == sorted([Path(first).parent.name, Path(second).parent.name,
                                                              "latest"])
    assert (runs / "latest").resolve() == trained_last
    assert re.search(r"run folder: \S+ taken back, the fit wrote no checkpoint \(\S+latest -> "
                     + re.escape(trained_last.name) + r"\)", capsys.readouterr().out)


def test_latest_points_at_the_newest_run_and_never_replaces_a_file_or_folder_of_the_users(tmp_path: Path) -> None:
    from lightning_modules.run_folders import link_latest

    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name).mkdir(parents=True)
    assert link_latest(runs / "a") and (runs / "latest").resolve() == (runs / "a").resolve()
    assert link_latest(runs / "b") and (runs / "latest").readlink() == Path("b")  # relative: the folder can move
    for kind in ("file", "folder"):
        other = tmp_path / kind
        (other / "run").mkdir(parents=True)
        mine = other / "latest"
        mine.write_text("mine") if kind == "file" else mine.mkdir()
        assert not link_latest(other / "run") and not mine.is_symlink()
        assert (mine.read_text() == "mine") if kind == "file" else mine.is_dir()
    assert sorted(p.name for p in runs.iterdir()) == ["a", "b", "latest"]  # no temporary link left


def test_a_run_that_wrote_no_checkpoint_is_taken_back(tmp_path: Path) -> None:
    """``latest`` goes back to the run before (or away, when there was none) and the failed run's
    folder goes if it is empty; what it wrote is kept, and a run with a checkpoint is not touched."""
    from lightning_modules.run_folders import latest_target, link_latest, take_back_run

    runs = tmp_path / "runs"
    (runs / "trained" / "checkpoints").mkdir(parents=True)
    (runs / "trained" / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    (runs / "failed" / "checkpoints").mkdir(parents=True)
    link_latest(runs / "failed")
    assert take_back_run(runs / "failed", None) and not (runs / "latest").is_symlink()
    assert sorted(p.name for p in runs.iterdir()) == ["trained"]  # its empty folders removed
    link_latest(runs / "trained")
    before = latest_target(runs)
    (runs / "configured").mkdir()
    (runs / "configured" / "fit-config.yaml").write_text("what it was asked")
    link_latest(runs / "configured")
    assert take_back_run(runs / "configured", before) and latest_target(runs) == "trained"
    assert (runs / "configured" / "fit-config.yaml").read_text() == "what it was asked"  # kept
    link_latest(runs / "configured")
    assert not take_back_run(runs / "trained", "configured")  # it has a checkpoint: nothing changes
    assert latest_target(runs) == "configured" and (runs / "trained" / "checkpoints" / "best.ckpt").exists()


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_the_nnunet_recipe_composes_with_a_data_config_and_trains(tiny_demo_dir: Path, tmp_path: Path,
                                                                   augment_on: str) -> None:
    run = cli("fit", tiny_demo_dir, tmp_path, "--config", "configs/recipes/nnunet.yaml", "--model.network", "dynunet",
              "--model.network_kwargs", '{"levels": 3, "filters": [4, 8, 16], "deep_supr_num": 1}',
              "--data.init_args.iterations_per_epoch", "2", "--trainer.max_epochs", "1",
              "--trainer.check_val_every_n_epoch", "1", "--data.init_args.augment_on", augment_on)
    assert (run.datamodule.train_set.augment is None) == (augment_on == "device")
    optimizer = run.model.optimizers().optimizer
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["nesterov"] is True
    assert optimizer.defaults["momentum"] == 0.99 and optimizer.defaults["weight_decay"] == 3e-5
    assert run.datamodule.sampling == "class_balanced" and len(run.datamodule.augment.steps) == 8
    assert run.trainer.global_step == 2 and run.model.flips is True
    assert torch.isfinite(run.trainer.callback_metrics["val/dice_mean"])


def test_the_gpu_preset_composes_and_trains_where_there_is_no_gpu(tiny_demo_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/trainer/gpu.yaml: bf16 mixed precision, cuDNN's autotuner, loader workers; on a
    CPU the same command still trains (bf16 autocast on the CPU, the autotuner idle)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # the Trainer sets it process-wide
    run = cli("fit", tiny_demo_dir, tmp_path, "--config", "configs/trainer/gpu.yaml", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.check_val_every_n_epoch", "1")
    assert run.trainer.precision == "bf16-mixed" and torch.backends.cudnn.benchmark is True
    assert run.datamodule.num_workers == 8 and run.trainer.global_step == 2
    assert torch.isfinite(run.trainer.callback_metrics["val/dice_mean"])


def test_a_patch_the_network_cannot_take_is_refused_before_training(tiny_demo_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A U-Net needs sides divisible by 8: a 44^3 patch (or inference window) is one line naming the
    option, exit 2, before any step."""
    import sys

    import train

    monkeypatch.setattr(sys, "argv", ["train.py", *tiny_run_args("fit", tiny_demo_dir, tmp_path,
                                                                   "--data.init_args.patch_size", "[44, 44, 44]")])
    with pytest.raises(SystemExit) as exit_code:
        train.main()
    assert exit_code.value.code == 2
    error = capsys.readouterr().err
    assert error.endswith("train.py: error: data.init_args.patch_size [44, 44, 44]: UNet3D needs every spatial size "
                          "divisible by 8, got (44, 44, 44); pad the input or choose another patch size\n"), error
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(DataError, match=r"model\.inference_roi_size \[20, 24, 24\]: UNet3D needs every spatial size "
                                        r"divisible by 8"):
        run_cli(tiny_run_args("fit", tiny_demo_dir, tmp_path, "--model.inference_roi_size", "[20, 24, 24]"),
                save_config=False)


def test_a_value_the_datamodule_refuses_is_one_line_before_anything_is_built(
        tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataModule's own check of an argument (an unknown modality, a fold without folds) is one
    line naming the class, exit 2, not jsonargparse's report of every type in the union with a
    traceback; nothing is created."""
    import sys

    import train

    for option, value, said in (
            ("modalities", "[T3]", "ISeg2017DataModule: unknown modalities ['T3']; available: ['T1', 'T2']"),
            ("fold", "1", "ISeg2017DataModule: fold 1 is set but num_folds is not")):
        monkeypatch.setattr(sys, "argv", ["train.py", *tiny_run_args("fit", tiny_demo_dir, tmp_path / "run",
                                                                       f"--data.init_args.{option}", value)])
        with pytest.raises(SystemExit) as exit_code:
            train.main()
        assert exit_code.value.code == 2
        error = capsys.readouterr().err
        assert error.endswith(f"train.py: error: {said}\n") and "Traceback" not in error, error
        with pytest.raises(DataError, match=f"^{re.escape(said)}$"):
            run_cli(tiny_run_args("fit", tiny_demo_dir, tmp_path / "run", f"--data.init_args.{option}", value),
                    save_config=False)
    assert not (tmp_path / "run").exists()


def test_only_a_refusal_raised_by_our_own_classes_is_shortened() -> None:
    """What jsonargparse wraps is walked to the cause: a ValueError raised in our packages (a
    DataModule's or network's check) is its message with the class built; any other error, a
    bug in ours or a failure inside a library, keeps its traceback (None here)."""
    from datamodules import ISeg2017DataModule
    from train import refusal_of_a_given_value

    def wrapped(build) -> BaseException:
        try:
            try:
                build()
            except Exception as cause:
                raise ValueError("Does not validate against any of the Union subtypes") from cause
        except ValueError as error:
            return error
        raise AssertionError("nothing raised")

    ours = wrapped(lambda: ISeg2017DataModule("data", modalities=["T3"]))
    assert refusal_of_a_given_value(ours) == "ISeg2017DataModule: unknown modalities ['T3']; available: ['T1', 'T2']"
    assert refusal_of_a_given_value(wrapped(lambda: ISeg2017DataModule("data", num_folds=2, fold=2))) == (
        "ISeg2017DataModule: k-fold needs num_folds >= 2 and 0 <= fold < num_folds, got num_folds=2, fold=2")
    assert refusal_of_a_given_value(wrapped(lambda: np.zeros(3).reshape(2, 2))) is None  # numpy's, not ours
    assert refusal_of_a_given_value(wrapped(lambda: ISeg2017DataModule("data", patch_size=None))) is None  # a TypeError

    def handled_then_failed() -> None:  # ours, raised while handling a refusal of ours: not a refusal
        try:
            ISeg2017DataModule("data", modalities=["T3"])
        except ValueError:
            SegmentationModule(network="unet3d", network_kwargs={"base_features": "two"})

    assert refusal_of_a_given_value(wrapped(handled_then_failed)) is None


def test_validation_subjects_given_on_a_preset_with_a_fraction_replace_it_and_are_said(
        tiny_demo_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data preset's ``val_fraction: 0.2`` (BIDS, BraTS, nnU-Net, NIfTI) with ``val_subjects`` or
    k-fold given on top: those choose, and the CLI says what they replace."""
    preset = ["--data.init_args.val_fraction", "0.2"]
    with caplog.at_level("INFO"):
        run = run_cli(tiny_run_args("fit", tiny_demo_dir, None, *preset, val="[subject-2]", test="[]")[1:],
                      save_config=False, run=False)
    assert [s.subject_id for s in run.datamodule.split()["val"]] == ["subject-2"]
    assert "data: val_subjects ['subject-2'] take the place of val_fraction 0.2" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        run = run_cli(tiny_run_args("fit", tiny_demo_dir, None, *preset, "--data.init_args.num_folds", "2",
                                    "--data.init_args.fold", "1", val="[]", test="[]")[1:], save_config=False,
                      run=False)
    assert len(run.datamodule.split()["val"]) == 2  # half of the 4 subjects, not a fifth
    assert "data: fold 1 of num_folds 2 take the place of val_fraction 0.2" in caplog.text
    from datamodules.splits import nnunet_folds

    run = run_cli(tiny_run_args("fit", tiny_demo_dir, None, "--data.init_args.num_folds", "2", "--data.init_args.fold",
                                "1", "--data.init_args.fold_rule", "nnunet", val="[]", test="[]")[1:],
                  save_config=False, run=False)
    subjects = [f"subject-{n}" for n in range(1, 5)]
    assert [s.subject_id for s in run.datamodule.split()["val"]] == nnunet_folds(subjects, 2)[1]


def test_presets_by_name_and_a_missing_data_config_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """``--config demo`` is configs/demo.yaml from any folder; a model, recipe or experiment preset
    without a data config is one line naming what is missing, before LightningCLI parses."""
    from lightning_modules.presets import CONFIG_DIR, check_command_line, resolve_config

    monkeypatch.chdir(tmp_path)
    assert resolve_config("demo") == str(CONFIG_DIR / "demo.yaml")
    assert resolve_config("datasets/brats") == resolve_config("configs/datasets/brats.yaml") \
        == str(CONFIG_DIR / "datasets" / "brats.yaml")
    (tmp_path / "mine.yaml").write_text("data:\n  class_path: datamodules.NiftiDataModule\n")
    assert resolve_config("mine.yaml") == "mine.yaml"  # an existing file is used as given
    assert check_command_line(["fit", "--config", "mine.yaml", "--config=models/vnet"]) == \
        ["fit", "--config", "mine.yaml", f"--config={CONFIG_DIR / 'models' / 'vnet.yaml'}"]
    with pytest.raises(DataError, match=r"no dataset: no data module \(data\.class_path\) in .*recipes/nnunet\.yaml; "
                                        r"give a data config first, e\.g\. --config datasets/iseg2017"):
        check_command_line(["fit", "--config", "recipes/nnunet"])
    with pytest.raises(DataError, match=r"no dataset: no data module \(data\.class_path\) in the command line"):
        run_cli(["fit", "--model.network", "vnet"], save_config=False)
    cli = run_cli(["--config", "demo", "--trainer.logger", "false"], run=False, save_config=False)
    assert type(cli.datamodule).__name__ == "ISeg2017DataModule"


def test_the_default_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16-mixed only for a CPU run where bf16 is native; float32 elsewhere (an emulating CPU, a
    GPU run: GPU presets choose theirs); an explicit precision always wins."""
    import lightning_modules.trainer as trainer

    monkeypatch.setattr(trainer.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer.torch.backends.mps, "is_available", lambda: False)
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(trainer, "fast_bf16", lambda device, native=native: native)
        assert trainer.default_precision() == trainer.default_precision("cpu") == expected
        assert trainer.default_precision("gpu") == "32-true"
    monkeypatch.setattr(trainer, "fast_bf16", lambda device: True)
    said: list[str] = []
    monkeypatch.setattr(trainer, "rank_zero_info", said.append)
    assert trainer.Trainer(logger=False, enable_checkpointing=False).precision == "bf16-mixed"
    assert said == ["trainer.precision bf16-mixed: this CPU runs bfloat16 natively (AVX512-BF16 or AMX); whole "
                    "volumes are still evaluated in float32; --trainer.precision 32-true trains in float32"]
    assert trainer.Trainer(precision="32-true", logger=False, enable_checkpointing=False).precision == "32-true"
    assert trainer.Trainer(precision="bf16-mixed", logger=False, enable_checkpointing=False).precision == "bf16-mixed"
    assert len(said) == 1  # a precision given is not explained


def test_fast_bf16_means_the_instructions_not_onednn_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """x86: AVX512-BF16 or AMX-BF16 make bf16 native; AVX512 alone (which oneDNN's own check
    accepts) emulates it."""
    from core import inference

    for capabilities, native in (({"avx2": True, "avx512_bf16": True}, True), ({"avx2": True, "amx_bf16": True}, True),
                                 ({"avx2": True, "avx512f": True}, False), ({"avx2": True}, False)):
        monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda c=capabilities: c)
        assert inference.fast_bf16("cpu") is native, capabilities


def test_a_half_precision_the_hardware_emulates_is_said_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 or float16 autocast where the device only emulates it (a GPU preset on an AVX2 CPU: the
    demo's training step about 150x slower than float32; bf16 on a V100 or T4) is one warning when
    the Trainer is built, with the precision that runs natively there; native ones say nothing."""
    import lightning_modules.trainer as trainer
    from core import inference
    from core.io import DataWarning

    emulated = inference.emulated_precision
    for capabilities, problems in (({"avx2": True}, {"bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16"}),
                                   ({"avx2": True, "avx512_bf16": True}, {"16-mixed", "16-true", "16"}),
                                   ({"avx2": True, "amx_bf16": True, "amx_fp16": True}, set()),
                                   ({"avx2": True, "avx512_fp16": True}, {"bf16-mixed", "bf16-true", "bf16"})):
        monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda c=capabilities: c)
        said = {p for p in ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16", "32-true", "32", "64-true")
                if emulated("cpu", p)}
        assert said == problems, capabilities
    monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True})
    assert emulated("cpu", "bf16-mixed") == ("precision bf16-mixed: bfloat16 is emulated on this CPU (no AVX512-BF16 "
                                             "or AMX), many times slower than float32")
    assert "float16 is emulated on this CPU (no AVX512-FP16 or AMX-FP16)" in emulated("cpu", "16-mixed")
    assert emulated("meta", "bf16-mixed") is None
    with pytest.warns(DataWarning, match=r"^precision bf16-mixed: bfloat16 is emulated on this CPU .*; train in "
                                         r"float32: --trainer\.precision 32-true$"):
        built = trainer.Trainer(precision="bf16-mixed", accelerator="cpu", logger=False, enable_checkpointing=False)
    assert built.precision == "bf16-mixed"  # said, not changed: the user chose it
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        trainer.Trainer(precision="32-true", accelerator="cpu", logger=False, enable_checkpointing=False)
        monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True, "amx_bf16": True})
        trainer.Trainer(precision="bf16-mixed", accelerator="cpu", logger=False, enable_checkpointing=False)

    # A pre-Ampere GPU (V100, T4): torch's own check counts emulation as support; ours does not.
    asked: list[bool] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation  # what a V100 answers

    monkeypatch.setattr(inference.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(inference.torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert inference.fast_bf16("cuda") is False and asked == [False]
    assert emulated("cuda", "bf16-mixed") == ("precision bf16-mixed: bfloat16 is emulated on this GPU (no native "
                                              "bfloat16 before compute capability 8.0, Ampere), many times slower "
                                              "than float32")
    assert emulated("cuda", "16-mixed") is None and emulated("cuda:1", "32-true") is None
    assert trainer.precision_advice(torch.device("cuda", 0), "bf16-mixed").endswith(
        "; train in float16 with loss scaling: --trainer.precision 16-mixed")
    assert trainer.precision_advice(torch.device("cuda", 0), "16-mixed") is None


def test_a_compiled_network_trains_with_deep_supervision_and_saves_the_same_checkpoint_keys(
        tiny_demo_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``model.compile_network`` (here the ``eager`` backend: dynamo's tracing without code
    generation, quick on a CPU): the deep-supervised DynUNet trains, the first step's time is
    said, and the checkpoint's keys are the plain network's (it loads without compiling)."""
    kwargs = json.dumps(dict(SMALL["dynunet"][0]))
    with caplog.at_level("INFO"):
        run = cli("fit", tiny_demo_dir, tmp_path, "--config", "configs/models/dynunet.yaml", "--model.network_kwargs",
                  kwargs, "--model.compile_network", "eager", "--data.init_args.patch_size", "[16, 16, 32]",
                  "--model.inference_roi_size", "null", "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1")
    assert re.search(r"torch\.compile \(eager\): the first training step took \d+\.\d s", caplog.text)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    plain = SegmentationModule(network="dynunet", network_kwargs=dict(SMALL["dynunet"][0]), in_channels=2,
                               label_space=run.model.hparams.label_space)
    assert checkpoint["state_dict"].keys() == plain.state_dict().keys()
    reloaded = SegmentationModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert reloaded.hparams.compile_network == "eager" and not reloaded._compiled  # compiled again only to fit


def test_messages_nobody_can_act_on_are_not_printed() -> None:
    """Lightning's model-summary note on every bf16-mixed fit, its pytree deprecation: silenced;
    any other warning still shown."""
    from train import quiet_benign_messages

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_benign_messages()
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB "
                      "will not be accurate. Using 32 bits instead.", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning, stacklevel=1)
        warnings.warn("something a user must see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["something a user must see"]


def test_tidying_up_after_a_failure_never_hides_the_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import train

    def cannot(*args: object) -> bool:
        raise OSError("Read-only file system")

    monkeypatch.setattr(train, "take_back_run", cannot)
    monkeypatch.delenv("BRAINSEG_RUN_ID", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no iSeg subjects found"):
        run_cli(["fit", "--config", "configs/demo.yaml", "--data.init_args.data_dir", str(tmp_path / "empty"),
                 "--trainer.logger", "false", "--checkpoint.dirpath", str(tmp_path / "runs" / "{run}" / "checkpoints")],
                save_config=False)
    assert "train.py: note: could not tidy up after the error (Read-only file system)" in capsys.readouterr().err
