"""study.py: the grid, subsets, overrides, smoke flags, resuming and an end-to-end smoke study."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from core.io import DataError
from study import SMOKE, Runner, Study, main


def write_study(path: Path, data_dir: Path, **extra: object) -> Path:
    study = {
        "name": "tiny",
        "configs": ["configs/demo.yaml"],
        "datasets": {"demo": {"args": {"data.init_args.data_dir": str(data_dir),
                                        "data.init_args.val_subjects": ["subject-3"],
                                        "data.init_args.test_subjects": ["subject-4"],
                                        "data.init_args.patch_size": [16, 16, 16],
                                        "data.init_args.cache_dir": None}}},
        "networks": {"unet3d": {"args": {"model.network_kwargs": {"base_features": 2}}},
                     "segresnet": {"configs": ["configs/models/segresnet.yaml"],
                                   "args": {"model.network_kwargs": {"init_filters": 8}}}},
        "seeds": [0, 1],
        **extra,
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_the_grid_its_subsets_and_overrides(tmp_path: Path) -> None:
    overrides = [{"networks": ["segresnet"], "args": {"data.init_args.samples_per_volume": 3}}]
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, folds=[0, 1], overrides=overrides))
    cells = study.cells()
    assert len(cells) == 8  # 1 dataset x 2 networks x 2 folds x 2 seeds
    assert [c.name for c in cells[:3]] == ["demo/unet3d/fold0-seed0", "demo/unet3d/fold0-seed1",
                                           "demo/unet3d/fold1-seed0"]
    subset = study.cells(networks=["segresnet"], seeds=[1], folds=[0])
    assert [c.name for c in subset] == ["demo/segresnet/fold0-seed1"]
    assert subset[0].configs == ("configs/demo.yaml", "configs/models/segresnet.yaml")
    assert subset[0].args["data.init_args.samples_per_volume"] == 3
    assert "data.init_args.samples_per_volume" not in cells[0].args
    with pytest.raises(DataError, match=r"no network \['vnet'\]; the study has \['segresnet', 'unet3d'\]"):
        study.cells(networks=["vnet"])
    (tmp_path / "bad.yaml").write_text("name: x\ndatasets: {a: {}}\nnetworks: {b: {}}\nseed: [1]\n")
    with pytest.raises(DataError, match=r"unknown keys \['seed'\]"):
        Study.from_file(tmp_path / "bad.yaml")


def test_commands_carry_seed_fold_smoke_and_wandb_group(tmp_path: Path) -> None:
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, folds=[1]))
    cell = study.cells(networks=["unet3d"], seeds=[1])[0]
    runner = Runner(study, tmp_path / "out", smoke=True)
    fit, test = runner.commands(cell)
    assert fit[:3] == [sys.executable, "train.py", "fit"] and test[2] == "test"
    flags = dict(zip(fit[3::2], fit[4::2], strict=False))
    assert flags["--seed_everything"] == "1" and flags["--data.init_args.fold"] == "1"
    assert flags["--trainer.limit_val_batches"] == str(SMOKE["trainer.limit_val_batches"])
    assert flags["--trainer.logger.init_args.group"] == "tiny"
    assert flags["--checkpoint.dirpath"] == str(tmp_path / "out" / "demo/unet3d/fold1-seed1" / "checkpoints")
    assert test[test.index("--ckpt_path") + 1].endswith("fold1-seed1/checkpoints/best.ckpt")
    # An interrupted cell resumes its fit; a tested one is skipped.
    checkpoints = tmp_path / "out" / cell.name / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    assert runner.commands(cell)[0][-2:] == ["--ckpt_path", str(checkpoints / "last.ckpt")]
    (checkpoints.parent / "test").mkdir()
    (checkpoints.parent / "test" / "metrics.csv").write_text("subject,structure,dice\n")
    assert runner.commands(cell) == []


@pytest.mark.slow  # a train.py process per cell
def test_a_smoke_study_runs_every_cell_and_compares_them(tiny_demo_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(tmp_path / "s.yaml", tiny_demo_dir, seeds=[0], wandb=False,
                       args={"trainer.logger": False, "trainer.enable_progress_bar": False})
    out = tmp_path / "study"
    assert main([str(path), "--smoke", "--output", str(out)]) == 0
    status = json.loads((out / "study.json").read_text())
    assert [c["state"] for c in status["cells"]] == ["done", "done"] and status["smoke"] is True
    for network in ("unet3d", "segresnet"):
        assert (out / "demo" / network / "seed0" / "test" / "metrics.csv").is_file()
    report = (out / "comparison.md").read_text()
    assert "| demo/unet3d/seed0 | unet3d |" in report and "| demo/segresnet/seed0 | segresnet |" in report
    assert "| mean | 1 |" in report  # the paired test on the one test subject both scored
    capsys.readouterr()
    assert main([str(path), "--smoke", "--output", str(out)]) == 0  # resumable: nothing left to do
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2


def test_the_sweep_file_drives_the_same_cli() -> None:
    """W&B agents pass each sampled setting as --key=value after the sweep's command."""
    from train import run_cli

    sweep = yaml.safe_load(Path("configs/sweeps/demo.yaml").read_text())
    assert sweep["program"] == "train.py" and sweep["metric"] == {"name": "val/dice_mean", "goal": "maximize"}
    assert sweep["command"][3:6] == ["fit", "--config", "configs/demo.yaml"]
    sampled = {key: (spec["values"][-1] if "values" in spec else spec["min"])
               for key, spec in sweep["parameters"].items()}
    parser = run_cli(["--config", "configs/demo.yaml"], run=False, save_config=False).parser
    config = parser.parse_args(["--config", "configs/demo.yaml", *(f"--{k}={v}" for k, v in sampled.items())])
    assert config.model.optimizer.init_args.lr == pytest.approx(0.0003)
    assert config.model.loss == "dice" and config.seed_everything == 1
