"""Each validation subject counts exactly once, on any number of processes: ``train.py validate``
with DDP on 2 CPU processes (gloo) and 3 subjects gives the one-process metrics to 1e-6.
(Lightning's padding sampler once repeated a subject on the second process: 0.136201 against
0.139036, and ``best.ckpt`` was chosen on the wrong figure.)"""

import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from train import run_cli

from conftest import tiny_run_args

pytestmark = pytest.mark.slow  # processes of their own (DDP, simulated SLURM jobs)

ROOT = Path(__file__).resolve().parent.parent
VALIDATION = ["subject-2", "subject-3", "subject-4"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_train(commands: list[list[str]], processes: int) -> None:
    """``train.py`` with each argument list of ``commands``, one after another: on one process in
    this process (no interpreter to start); on 2, both ranks started at once as torchrun or srun
    start them (``LOCAL_RANK`` set: Lightning joins them instead of starting the second itself, so
    the two interpreters load side by side), each rank running every command in turn in the process
    group the first one set up (``tests/train_commands.py``). One thread per process either way, so
    both compute the same floats."""
    if processes == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for args in commands:
                run_cli(args, save_config=False)
        finally:
            torch.set_num_threads(threads)
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(processes), "NODE_RANK": "0"}
    logs = [tempfile.TemporaryFile("w+") for _ in range(processes)]
    ranks = [subprocess.Popen([sys.executable, "tests/train_commands.py", json.dumps(commands)], cwd=ROOT,
                              env={**env, "LOCAL_RANK": str(rank)}, stdout=log, stderr=subprocess.STDOUT, text=True)
             for rank, log in enumerate(logs)]
    deadline, killed = time.monotonic() + 600, False
    while any(process.poll() is None for process in ranks):
        if any(process.returncode for process in ranks) or time.monotonic() > deadline:
            for process in ranks:  # a rank that failed leaves the other waiting in a collective, for minutes
                process.kill()
            killed = True
            break
        time.sleep(0.2)
    said = []
    for rank, (process, log) in enumerate(zip(ranks, logs, strict=True)):
        process.wait()
        log.seek(0)
        if process.returncode:
            said.append(f"rank {rank} (exit {process.returncode}): {log.read()[-2000:]}")
    assert not said and not killed, "\n".join(said) or "the ranks ran past 600 s"


def evaluation_commands(checkpoint: Path, data: Path, out: Path, devices: int) -> list[list[str]]:
    """``train.py validate`` with VALIDATION as validation subjects (what each process saw and the
    logged metrics under ``out/validate``), then ``train.py test`` with them as test subjects
    (its report and logged metrics under ``out/test``), of ``checkpoint`` on ``devices`` processes."""
    strategy = ["--trainer.strategy", "ddp", "--trainer.devices", str(devices)] if devices > 1 else []
    commands = []
    for subcommand, subjects in (("validate", {"val": json.dumps(VALIDATION), "test": "[]"}),
                                 ("test", {"val": "[]", "test": json.dumps(VALIDATION)})):
        folder = out / subcommand
        folder.mkdir(parents=True)
        recorder = folder / "recorder.yaml"
        recorder.write_text("trainer:\n  callbacks:\n    - class_path: ddp_recorder.Recorder\n"
                            f"      init_args:\n        out: {folder / 'logged.json'}\n")
        report = ["--test_report.output_dir", str(folder)] if subcommand == "test" else []
        commands.append(tiny_run_args(subcommand, data, None, "--config", str(recorder), "--ckpt_path",
                                      str(checkpoint), "--trainer.accelerator", "cpu", *strategy, *report,
                                      "--trainer.default_root_dir", str(folder), **subjects))
    return commands


@pytest.fixture(scope="module")
def evaluations(trained_checkpoint: Path, tiny_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[int, Path]:
    """The shared trained model (``conftest.trained_run``) validated and tested on 1 process and
    on 2 (one launch of the ranks for both commands): the output folder per process count."""
    outputs = {}
    for devices in (1, 2):
        outputs[devices] = tmp_path_factory.mktemp(f"ddp{devices}")
        run_train(evaluation_commands(trained_checkpoint, tiny_demo_dir, outputs[devices], devices), devices)
    return outputs


@pytest.mark.xdist_group("ddp_evaluations")  # one launch of the ranks for both tests
def test_ddp_counts_every_validation_subject_once(evaluations: dict[int, Path]) -> None:
    single, ddp = (json.loads((evaluations[d] / "validate" / "logged.json").read_text()) for d in (1, 2))
    seen = [json.loads((evaluations[2] / "validate" / f"logged.json.rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(seen[0] + seen[1]) == sorted(VALIDATION)  # each subject on exactly one process
    assert len(seen[0]) == 2 and len(seen[1]) == 1
    for name in ("val/loss", "val/dice_mean", "val/dice_CSF", "val/dice_GM", "val/dice_WM"):
        assert ddp[name] == pytest.approx(single[name], abs=1e-6), name  # the loss too: unequal shards weigh right


@pytest.mark.xdist_group("ddp_evaluations")
def test_ddp_test_report_holds_every_subject_once(evaluations: dict[int, Path]) -> None:
    """``train.py test`` on 2 processes: metrics.csv and dice.csv gather both processes' subjects;
    the logged test loss and Dice equal one process's."""
    tables, logged = {}, {}
    for devices in (1, 2):
        out = evaluations[devices] / "test"
        with open(out / "metrics.csv") as handle:
            tables[devices] = sorted(tuple(row.values()) for row in csv.DictReader(handle))
        logged[devices] = json.loads((out / "logged.json").read_text())
        assert sorted(p.stem for p in out.glob("*.png")) == VALIDATION  # every subject drawn, by its process
    assert [row[:2] for row in tables[2]] == [(s, r) for s in VALIDATION for r in ("CSF", "GM", "WM")]
    assert tables[2] == tables[1]
    for name in ("test/loss", "test/dice_mean", "test/dice_CSF", "test/dice_GM", "test/dice_WM"):
        assert logged[2][name] == pytest.approx(logged[1][name], abs=1e-6), name


def slurm_job(tmp_path: Path, job_id: str, tiny_demo_dir: Path) -> tuple[dict, list[str]]:
    """The environment of a simulated SLURM job (``scontrol`` on PATH records its arguments in
    ``scontrol.txt``) and a small ``train.py fit`` with the SLURM preset that is sent SIGUSR1 after
    its first batch and ends there, as SLURM ends a job it requeues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.txt'}\n")
    scontrol.chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": job_id, "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "node1"}
    env = {**os.environ, **slurm, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("BRAINSEG_RUN_ID", None)
    signal_config = tmp_path / "signal.yaml"
    signal_config.write_text("trainer:\n  callbacks:\n    - class_path: ddp_recorder.SendSignal\n"
                             "      init_args:\n        after_batch: 1\n        then_exit: true\n")
    args = tiny_run_args("fit", tiny_demo_dir, None, "--config", "configs/trainer/slurm.yaml", "--config",
                         str(signal_config), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                         "--trainer.strategy", "auto", "--trainer.sync_batchnorm", "false", "--trainer.max_epochs", "1",
                         test="[]")
    command = [sys.executable, "train.py", *args]
    return env, command


def test_a_requeued_slurm_job_resumes_its_own_run_folder(tiny_demo_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """configs/trainer/slurm.yaml under a (simulated) SLURM job: SIGUSR1 before the time limit makes
    Lightning save an hpc checkpoint (through the atomic writer, loadable with weights_only) and
    call ``scontrol requeue <job id>`` (a stand-in on PATH records the call). With ``{run}`` the
    job's run folder is named after the job and the command, the SLURM checkpoint goes into it
    (not into a folder shared with other runs), and the requeued job (same command,
    ``SLURM_RESTART_COUNT=1``, in this process: no second interpreter to start) resumes from that
    checkpoint in that folder."""
    env, command = slurm_job(tmp_path, "4343", tiny_demo_dir)
    runs = tmp_path / "runs"
    command += ["--trainer.limit_train_batches", "3", "--checkpoint.dirpath", str(runs / "{run}" / "checkpoints")]
    killed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 143, killed.stderr[-2000:]
    (run,) = [p for p in runs.iterdir() if p.name != "latest"]
    assert run.name.startswith("slurm4343-")
    (hpc,) = run.glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == 1
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4343"]
    assert not list(run.glob(".*"))  # no temporary file left by the atomic writer
    for name, value in {**env, "SLURM_RESTART_COUNT": "1"}.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    run_cli(command[2:])  # command: python train.py ARGS
    assert f"run folder: {run} (also {runs / 'latest'}), resuming {hpc}" in capsys.readouterr().out
    assert [p for p in runs.iterdir() if p.name != "latest"] == [run]  # no second run folder
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
