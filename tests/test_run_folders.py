"""Which folder a fit writes: ``{run}`` templates, SLURM run ids, the newest checkpoint of a run."""

import os
import time
from pathlib import Path

import pytest

from core.checkpoint import newest_checkpoint
from core.io import DataError
from lightning_modules.run_folders import RunTemplate, choose_run_folder, slurm_run_id

SLURM = {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "77"}


def test_the_run_folder_is_the_path_component_holding_run(tmp_path: Path) -> None:
    template = RunTemplate(f"{tmp_path}/runs/unet-{{run}}-a/checkpoints")
    assert template.folder("20260101-000000") == tmp_path / "runs" / "unet-20260101-000000-a"
    assert template.checkpoint_dir("x") == f"{tmp_path}/runs/unet-x-a/checkpoints"
    checkpoint = template.folder("20260101-000000") / "checkpoints" / "last.ckpt"
    assert template.run_id_of(checkpoint) == "20260101-000000"
    assert template.run_id_of(tmp_path / "elsewhere" / "checkpoints" / "last.ckpt") is None
    assert RunTemplate("{run}/c").folder("r1") == Path("r1")
    with pytest.raises(DataError, match="must occur once"):
        RunTemplate("runs/{run}/{run}")


def test_new_run_ids_never_reuse_a_folder(tmp_path: Path) -> None:
    template = RunTemplate(f"{tmp_path}/{{run}}/checkpoints")
    first = template.new_run_id()
    template.folder(first).mkdir()
    second = template.new_run_id()
    assert second != first and second.startswith(first[:15])


def test_slurm_run_ids_follow_the_job_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_run_id(["fit"]) is None
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    run_id = slurm_run_id(["fit", "--config", "a.yaml"])
    assert run_id is not None and run_id.startswith("slurm77-")
    assert slurm_run_id(["fit", "--config", "a.yaml"]) == run_id  # every task, and after a requeue
    assert slurm_run_id(["fit", "--config", "b.yaml"]) != run_id  # a second command in the same job
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive shell is not a managed job
    assert slurm_run_id(["fit"]) is None


def test_a_requeued_job_resumes_the_newest_of_its_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    dirpath = f"{tmp_path}/{{run}}/checkpoints"
    chosen = choose_run_folder(dirpath, None, ["fit"])
    assert chosen.resume_from is None and chosen.folder == tmp_path / slurm_run_id(["fit"])
    checkpoints = Path(chosen.checkpoint_dir)
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"old")
    hpc = chosen.folder / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"new")
    os.utime(checkpoints / "last.ckpt", ns=(time.time_ns() - 10**9,) * 2)
    assert newest_checkpoint(chosen.folder, chosen.checkpoint_dir) == hpc
    with pytest.raises(DataError, match="already holds the checkpoints of another run"):
        choose_run_folder(dirpath, None, ["fit"])  # the same job id and command, not requeued
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = choose_run_folder(dirpath, None, ["fit"])
    assert requeued.folder == chosen.folder and requeued.resume_from == str(hpc)
