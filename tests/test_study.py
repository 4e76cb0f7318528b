"""study.py: the grid, subsets, overrides, smoke flags, resuming, the local and SLURM launchers, status
and collect, and the GPU study preset."""

import csv
import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml

from core.io import DataError
from core.study_state import cell_lock, read_record, write_record
from scripts import standin_slurm
from study import SMOKE, Runner, Study, main

from conftest import tiny_run_args

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.slow  # a process per cell
def test_a_smoke_study_runs_its_cells_two_at_a_time_and_compares_them(tiny_demo_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """submitit's local executor: each cell a process of its own (fit, then test), two at once."""
    path = write_study(tmp_path / "s.yaml", tiny_demo_dir, seeds=[0], wandb=False,
                       args={"trainer.logger": False, "trainer.enable_progress_bar": False})
    out = tmp_path / "study"
    assert main([str(path), "--smoke", "--output", str(out), "--max-parallel", "2"]) == 0
    status = json.loads((out / "study.json").read_text())
    assert [c["state"] for c in status["cells"]] == ["done", "done"] and status["smoke"] is True
    records = [read_record(out / "demo" / network / "seed0") for network in ("unet3d", "segresnet")]
    demo = hashlib.sha256((ROOT / "configs" / "demo.yaml").read_bytes()).hexdigest()
    assert [r["settings"]["configs"]["configs/demo.yaml"] for r in records] == [demo, demo]  # kept at submission
    assert len({r["job_id"] for r in records}) == 2 and {r["launcher"] for r in records} == {"local"}
    assert max(r["started"] for r in records) < min(r["ended"] for r in records)  # the two ran at the same time
    for network, record in zip(("unet3d", "segresnet"), records, strict=True):
        report = out / "demo" / network / "seed0" / "test" / "metrics.csv"
        with open(report) as handle:
            dice = [float(row["dice"]) for row in csv.DictReader(handle)]
        assert record["test_dice"] == pytest.approx(sum(dice) / len(dice))
    report = (out / "comparison.md").read_text()
    assert "| demo/unet3d/seed0 | unet3d |" in report and "| demo/segresnet/seed0 | segresnet |" in report
    assert "| mean | 1 |" in report  # the paired test on the one test subject both scored
    assert "Partial" not in report
    capsys.readouterr()
    assert main([str(path), "--smoke", "--output", str(out)]) == 0  # resumable: nothing left to do
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| demo/unet3d/seed0 | done | {records[0]['job_id']} | {records[0]['test_dice']:.4f} |" in table
    assert table.rstrip().endswith("2 done")


def test_failed_cells_run_again_only_when_asked_and_a_live_job_keeps_its_cell(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, seeds=[0, 1, 2]))
    cells = study.cells(networks=["unet3d"])
    runner = Runner(study, tmp_path / "out")
    failed, held, lost = (runner.folder(c) for c in cells)
    write_record(failed, state="failed", launcher="local", error="CUDA out of memory")
    write_record(held, state="running", launcher="local", job_id=str(os.getpid()), host=socket.gethostname())
    write_record(lost, state="running", launcher="local", job_id="999999999", host=socket.gethostname())
    assert runner.to_run(cells) == []
    said = capsys.readouterr().out
    assert "failed earlier (CUDA out of memory), skipped; --retry-failed runs it again" in said
    assert f"running as job {os.getpid()} (local), skipped" in said
    assert "the job ended without a result" not in said and said.count("failed earlier") == 2  # the dead job's cell
    runner.retry_failed = True
    assert runner.to_run(cells) == [cells[0], cells[2]]  # never the one a live process holds
    with cell_lock(held):  # and a second process that reaches a held cell does not run it
        busy = runner.job(cells[1])()
    assert busy == {"cell": cells[1].name, "state": "busy"}
    assert read_record(held)["state"] == "running"


def test_cells_run_with_other_settings_are_refused_or_set_aside_and_run_again_when_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell keeps the settings it was submitted with (arguments, each config by its content).
    The study file or a config edited since, run into the same folder: refused before any work,
    naming the cells and what differs; ``--rerun-changed`` moves their folders to
    ``<study>.replaced/<time>/`` (never deleted, out of the study's way) and runs them again."""
    config = tmp_path / "recipe.yaml"
    shutil.copy(ROOT / "configs" / "demo.yaml", config)
    path = write_study(tmp_path / "s.yaml", tmp_path, seeds=[0], configs=[str(config)])
    study = Study.from_file(path)
    (cell,) = study.cells(networks=["unet3d"])
    out = tmp_path / "out"
    runner = Runner(study, out)
    folder = runner.folder(cell)
    write_record(folder, state="done", launcher="local", settings=runner.settings(cell))
    (folder / "test").mkdir()
    (folder / "test" / "metrics.csv").write_text("subject,structure,dice\nsubject-4,CSF,0.5\n")
    assert runner.changed([cell]) == {}
    edited = [{"networks": ["unet3d"], "args": {"model.optimizer.init_args.lr": 0.01}}]
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, seeds=[0], configs=[str(config)],
                                       overrides=edited))
    (cell,) = study.cells(networks=["unet3d"])
    assert Runner(study, out).changed([cell]) == {
        cell.name: "arguments [] -> ['--model.optimizer.init_args.lr', '0.01']"}
    config.write_text(config.read_text().replace("max_epochs: 12", "max_epochs: 20"))
    runner = Runner(study, out)
    assert runner.changed([cell]) == {cell.name: f"{config} edited; arguments [] -> "
                                                 "['--model.optimizer.init_args.lr', '0.01']"}
    with pytest.raises(DataError, match=rf"{out}: 1 cell was run with other settings than the study gives now "
                                        rf"\(demo/unet3d/seed0: {config} edited; .*\); choose another --output, or "
                                        r"pass --rerun-changed to run them again"):
        runner.run([cell])
    assert read_record(folder)["state"] == "done"  # nothing touched
    runner.rerun_changed = runner.dry_run = True
    assert runner.run([cell]) == [] and folder.is_dir()
    assert "would move to" in capsys.readouterr().out
    runner.dry_run = False
    runner.set_aside([cell], runner.changed([cell]))
    (moved,) = (tmp_path / "out.replaced").glob("*/demo/unet3d/seed0")
    assert not folder.exists() and (moved / "test" / "metrics.csv").is_file()
    assert runner.to_run([cell]) == [cell]  # a fresh cell now


def test_collect_marks_a_partial_comparison(tiny_demo_dir: Path, trained_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    study = Study.from_file(write_study(tmp_path / "s.yaml", tiny_demo_dir, seeds=[0]))
    runner = Runner(study, tmp_path / "out")
    cells = study.cells()
    done = runner.folder(cells[0])
    shutil.copytree(trained_run / "checkpoints", done / "checkpoints")
    from train import run_cli

    run_cli(tiny_run_args("test", tiny_demo_dir, None, "--ckpt_path", str(done / "checkpoints" / "best.ckpt"),
                          "--test_report.output_dir", str(done / "test"), "--trainer.default_root_dir", str(done)),
            save_config=False)
    write_record(runner.folder(cells[1]), state="failed", launcher="local", error="exit 1")
    runner.write_status(cells)
    assert main(["collect", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "comparison.md").read_text()
    assert report.startswith("**Partial comparison: 1 of 2 cells have a test report.** Missing: "
                             "demo/segresnet/seed0 (failed).")
    assert "| demo/unet3d/seed0 | unet3d |" in report
    with pytest.raises(SystemExit) as stop:
        main(["status", str(tmp_path / "nowhere")])
    assert stop.value.code == 2 and "no study.json" in capsys.readouterr().err


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


@pytest.mark.slow  # the simulated node runs one cell twice, a process each time
def test_a_study_on_slurm_is_one_array_and_a_preempted_cell_resumes_its_own_checkpoint(
        tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--launcher slurm`` against stand-in sbatch/sacct/scontrol: one job array with the study's
    resources and Lightning's preemption signal; then a node runs array task 0, is sent SIGUSR1
    after its first batch (Lightning saves the cell's state and requeues ``4242_0``) and ends as
    SLURM ends it; the requeued task resumes from that checkpoint in the same cell folder and
    tests. ``status`` follows it; ``collect`` marks the comparison partial while task 1 has failed."""
    log = tmp_path / "scheduler"
    for name, value in standin_slurm.install(log).items():
        monkeypatch.setenv(name, value)
    path = write_study(tmp_path / "s.yaml", tiny_demo_dir, seeds=[0], wandb=False,
                       args={"trainer.logger": False, "trainer.enable_progress_bar": False,
                             "trainer.accelerator": "cpu", "trainer.devices": 1},
                       slurm={"partition": "gpu", "account": "lab", "gpus": 1, "cpus": 4, "mem_gb": 16,
                              "time_min": 90, "sbatch": {"constraint": "a100"}})
    out = tmp_path / "study"
    submit = [str(path), "--smoke", "--launcher", "slurm", "--max-parallel", "1", "--output", str(out),
              "--trainer.callbacks+=scripts.standin_slurm.Preempt"]
    assert main([*submit, "--dry-run"]) == 0 and not out.exists()
    shown = capsys.readouterr().out
    assert main(submit) == 0
    assert "submitted 2 cells as SLURM job array 4242 (at most 1 at a time)" in capsys.readouterr().out
    sbatch = (log / "sbatch.sh").read_text()
    assert [line for line in shown.splitlines() if line.startswith("#SBATCH")] == [  # what --dry-run showed
        line for line in sbatch.splitlines() if line.startswith("#SBATCH")]
    for line in ("--array=0-1%1", "--gres=gpu:1", "--time=90", "--signal=USR1@120", "--partition=gpu",
                 "--account=lab", "--constraint=a100", "--cpus-per-task=4", "--mem=16384MB", "--ntasks-per-node=1",
                 "--job-name=study-tiny"):
        assert f"#SBATCH {line}\n" in sbatch, line
    unet, segresnet = out / "demo" / "unet3d" / "seed0", out / "demo" / "segresnet" / "seed0"
    assert [read_record(f)["job_id"] for f in (unet, segresnet)] == ["4242_0", "4242_1"]
    standin_slurm.set_states(log, {"4242_0": "PENDING", "4242_1": "PENDING"})
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("2 submitted")

    # The node: array task 0 as srun starts it, sent SIGUSR1 after its first batch and then ended.
    preempted = standin_slurm.run_task(log, 0, extra_env={"STANDIN_PREEMPT": "1"})
    assert preempted.returncode == 143, preempted.stderr[-3000:]
    assert (log / "scontrol.txt").read_text().split() == ["requeue", "4242_0"]
    (hpc,) = unet.glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == 1
    standin_slurm.set_states(log, {"4242_0": "REQUEUED", "4242_1": "PENDING"})
    assert main(["status", str(out)]) == 0
    assert "| demo/unet3d/seed0 | running | 4242_0 |" in capsys.readouterr().out

    resumed = standin_slurm.run_task(log, 0, restarts=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {hpc}" in resumed.stdout + resumed.stderr
    assert torch.load(unet / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert read_record(unet)["state"] == "done" and (unet / "test" / "metrics.csv").is_file()
    assert not list(segresnet.glob("*.ckpt")) and not list((out / "demo" / "unet3d").glob("seed0?*"))

    standin_slurm.set_states(log, {"4242_0": "COMPLETED", "4242_1": "OUT_OF_MEMORY"})
    assert main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| demo/unet3d/seed0 | done | 4242_0 |" in table
    assert "| demo/segresnet/seed0 | failed | 4242_1 |" in table and "(scheduler: OUT_OF_MEMORY); log " in table
    assert main(["collect", str(out)]) == 0
    assert (out / "comparison.md").read_text().startswith("**Partial comparison: 1 of 2 cells")
    # Submitting again: the finished cell is skipped, the failed one only with --retry-failed.
    assert main([str(path), "--smoke", "--launcher", "slurm", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert "finished earlier, skipped" in said and "--retry-failed runs it again" in said


class FakeLocalExecutor:
    """Stands in for submitit's local executor: records the GPUs each job was given and which jobs
    were running then; a job ends at the second poll after it started."""

    def __init__(self) -> None:
        self.parameters: dict = {}
        self.jobs: list = []
        self.started: list[tuple[tuple[int, ...], list[tuple[int, ...]]]] = []

    def update_parameters(self, **kwargs) -> None:
        self.parameters.update(kwargs)

    def submit(self, job):
        fake = FakeJob(len(self.jobs), tuple(self.parameters["visible_gpus"]))
        running = [j.gpus for j in self.jobs if not j.ended]
        self.started.append((fake.gpus, running))
        self.jobs.append(fake)
        return fake


class FakeJob:
    def __init__(self, number: int, gpus: tuple[int, ...]) -> None:
        self.job_id, self.gpus, self.polls, self.ended = str(10_000 + number), gpus, 0, False
        self.paths = type("Paths", (), {"stderr": Path(f"/logs/{self.job_id}.err")})()

        self.cancelled = False

    def done(self) -> bool:
        self.polls += 1
        self.ended = self.ended or self.polls >= 2
        return self.ended

    def cancel(self, check: bool = True) -> None:
        self.cancelled = self.ended = True

    def result(self) -> None:
        raise RuntimeError("killed")


def test_local_gpus_get_one_cell_each_and_the_next_cell_takes_the_gpu_that_freed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, seeds=[0, 1, 2]))
    cells = study.cells(networks=["unet3d"])
    fake = FakeLocalExecutor()
    monkeypatch.setattr(Runner, "executor", lambda self, kind: fake)
    monkeypatch.setattr("study.time.sleep", lambda seconds: None)
    runner = Runner(study, tmp_path / "out", gpus=[3, 1], max_parallel=2)
    runner.run_local(cells)
    assert [gpus for gpus, _ in fake.started] == [(3,), (1,), (3,)]
    assert all(gpus not in running for gpus, running in fake.started)  # never two cells on one GPU
    assert runner.job(cells[0]).threads is None  # a GPU cell keeps torch's threads
    record = read_record(runner.folder(cells[2]))  # the fake job ended without running the cell
    assert (record["state"], record["error"], record["log"]) == ("failed", "killed", "/logs/10002.err")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "s.yaml"), "--gpus", "0,0"])
    assert stop.value.code == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit) as stop:  # a GPU that is not there: the cell would train on the CPU
        main([str(tmp_path / "s.yaml"), "--gpus", "1,2", "--output", str(tmp_path / "refused")])
    assert stop.value.code == 2 and not (tmp_path / "refused").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no sbatch: refused before anything is written
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "s.yaml"), "--launcher", "slurm", "--output", str(tmp_path / "refused")])
    assert stop.value.code == 2 and not (tmp_path / "refused").exists()


def test_a_dry_run_shows_the_job_arrays_script_without_slurm_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--launcher slurm --dry-run`` prints the cells' commands and the script sbatch would get
    (the array, the study's resources, Lightning's requeue signal), also on a machine without
    SLURM's commands (a laptop before the cluster), and writes no file."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, no srun
    path = write_study(tmp_path / "s.yaml", tmp_path, seeds=[0, 1, 2],
                       slurm={"partition": "a100", "account": "lab", "qos": "normal", "gpus": 2, "cpus": 16,
                              "mem_gb": 7.5, "time_min": 240, "signal_delay_s": 300,
                              "sbatch": {"constraint": "a100_80gb"}, "setup": ["module load cuda/12.4"]})
    out = tmp_path / "study"
    assert main([str(path), "--launcher", "slurm", "--dry-run", "--max-parallel", "4", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert not out.exists()
    assert said.count(" train.py fit ") == 6 and said.count(" train.py test ") == 6  # 2 networks x 3 seeds
    assert "the job array's script (sbatch would be given it; 6 tasks, one a cell):" in said
    for line in ("--array=0-5%4", "--gres=gpu:2", "--ntasks-per-node=2", "--cpus-per-task=16", "--mem=7680MB",
                 "--time=240", "--signal=USR1@300", "--partition=a100", "--account=lab", "--qos=normal",
                 "--constraint=a100_80gb", "--job-name=study-tiny"):
        assert f"#SBATCH {line}\n" in said, line
    assert "\nmodule load cuda/12.4\n" in said and " -u -m submitit.core._submit " in said


def test_the_gpu_study_preset_composes_every_cell_with_one_budget(tmp_path: Path) -> None:
    """configs/studies/gpu_thesis.yaml: the thesis' networks and the planned DynUNet, each cell's
    fit command parsed by train.py's own parser (nothing built, no data needed)."""
    from train import run_cli

    study = Study.from_file("configs/studies/gpu_thesis.yaml")
    runner = Runner(study, tmp_path / "out")
    parser = run_cli(["--config", "configs/demo.yaml"], run=False, save_config=False).parser
    seen = {}
    for cell in study.cells():
        config = parser.parse_args(runner.job(cell).fit[1:])
        seen[cell.network] = config
        assert config.trainer.max_time == "00:00:00:50" and config.trainer.check_val_every_n_epoch == 1
        assert config.trainer.precision == "bf16-mixed" and config.trainer.max_epochs == 10000
    assert {name: c.model.network for name, c in seen.items()} == {
        "vnet": "vnet", "vnet_light": "vnet_light", "unet3d": "unet3d", "densenet3d": "densenet3d",
        "densenet3d_late_fusion": "densenet3d_late_fusion", "densenet3d_early_fusion": "densenet3d_early_fusion",
        "dynunet_planned": "dynunet"}
    planned = seen["dynunet_planned"]
    assert tuple(planned.data.init_args.patch_size) == (80, 96, 80) and planned.model.network_kwargs["levels"] == 5
    assert planned.model.optimizer.class_path == "torch.optim.SGD"  # nnU-Net's recipe
    assert tuple(seen["densenet3d"].data.init_args.patch_size) == (32, 32, 32)
    assert seen["unet3d"].model.network_kwargs == {"base_features": 32}


def test_stopping_a_local_study_stops_its_cells_and_they_resume_later(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or SIGTERM) while cells run: each running job is cancelled (submitit's local jobs
    would outlive study.py), its cell recorded as interrupted, which a later run resumes."""
    study = Study.from_file(write_study(tmp_path / "s.yaml", tmp_path, seeds=[0, 1, 2]))
    cells = study.cells(networks=["unet3d"])
    fake = FakeLocalExecutor()
    monkeypatch.setattr(Runner, "executor", lambda self, kind: fake)

    def interrupt(seconds: float) -> None:
        if not any(job.cancelled for job in fake.jobs):
            raise KeyboardInterrupt

    monkeypatch.setattr("study.time.sleep", interrupt)
    runner = Runner(study, tmp_path / "out", max_parallel=2)
    with pytest.raises(KeyboardInterrupt):
        runner.run_local(cells)
    assert [job.cancelled for job in fake.jobs] == [True, True]  # the third never started
    assert [read_record(runner.folder(c)).get("state") for c in cells] == ["interrupted", "interrupted", None]
    assert runner.to_run(cells) == cells  # interrupted cells run again without --retry-failed
