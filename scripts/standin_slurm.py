"""A SLURM cluster on one machine, for trying ``study.py --launcher slurm`` without one: stand-in
``sbatch`` / ``srun`` / ``sacct`` / ``scontrol`` that record what they are asked and answer from
files, and a "node" that runs one array task of the submitted script as srun would start it.

    python scripts/standin_slurm.py configs/studies/demo.yaml --output /tmp/standin --smoke

submits the study as one array, runs every task on this machine one after another, preempts the
first one after its first training batch (SIGUSR1, as SLURM does ``signal_delay_s`` before the
end) and runs it again as the requeued task, printing the sbatch script, ``study.py status``
before and after, and ``study.py collect`` at the end. The tests use the same pieces.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parent.parent
ARRAY = "4242"  # the job id the stand-in sbatch answers
STAND_INS = {
    "sbatch": f'cp "$1" "$STANDIN_LOG/sbatch.sh"; echo "Submitted batch job {ARRAY}"',
    "sacct": 'cat "$STANDIN_LOG/sacct.txt" 2>/dev/null; true',
    "scontrol": 'echo "$@" >> "$STANDIN_LOG/scontrol.txt"',
    "srun": 'exec "$@"',  # submitit submits only where srun is found
}


def install(folder: Path) -> dict[str, str]:
    """Write the stand-ins into ``folder/bin``; the environment that puts them first on PATH
    (their records go to ``folder``)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, script in STAND_INS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STANDIN_LOG": str(folder)}


def set_states(folder: Path, states: Mapping[str, str]) -> None:
    """What the stand-in sacct answers: ``{"4242_0": "RUNNING", ...}``."""
    (folder / "sacct.txt").write_text("".join(f"{job}|{state}\n" for job, state in states.items()))


def task_command(folder: Path) -> list[str]:
    """The submitted script's command as srun starts it on a node (srun's own flags dropped)."""
    command = shlex.split((folder / "sbatch.sh").read_text().strip().splitlines()[-1])
    return command[command.index("submitit.core._submit") - 3:]  # <python> -u -m submitit.core._submit <folder>


def run_task(folder: Path, task: int, restarts: int = 0, extra_env: Mapping[str, str] | None = None,
             python_path: Sequence[Path] = (ROOT,)) -> subprocess.CompletedProcess[str]:
    """Run array task ``task`` of the submitted script here, with the environment SLURM gives it
    (``SLURM_RESTART_COUNT`` after a requeue)."""
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(int(ARRAY) + 1 + task),
           "SLURM_ARRAY_JOB_ID": ARRAY, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NAME": "study", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(str(p) for p in python_path), **(extra_env or {})}
    if restarts:
        env["SLURM_RESTART_COUNT"] = str(restarts)
    return subprocess.run(task_command(folder), cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("--output", type=Path, required=True, help="a new folder: the study and the stand-ins' records")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.output.exists() and any(args.output.iterdir()):
        parser.exit(2, f"standin_slurm.py: error: {args.output} is not empty\n")
    log = args.output / "scheduler"
    os.environ.update(install(log))
    out = args.output / "study"

    def study(*more: str) -> None:
        command = [sys.executable, "study.py", *more]
        print("$ " + shlex.join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=False)

    smoke = ["--smoke"] if args.smoke else []
    study(str(args.study), "--launcher", "slurm", "--output", str(out), *smoke,
          "--trainer.callbacks+=scripts.standin_slurm.Preempt")
    print((log / "sbatch.sh").read_text())
    count = int((log / "sbatch.sh").read_text().split("--array=0-")[1].split("%")[0]) + 1
    jobs = [f"{ARRAY}_{k}" for k in range(count)]
    set_states(log, dict.fromkeys(jobs, "PENDING"))
    study("status", str(out))
    print(f"\n== node: task 0 preempted after its first batch ({ARRAY}_0) ==", flush=True)
    first = run_task(log, 0, extra_env={"STANDIN_PREEMPT": "1"})
    print(f"exit {first.returncode}; scontrol: {(log / 'scontrol.txt').read_text().strip()}")
    set_states(log, {**dict.fromkeys(jobs, "PENDING"), jobs[0]: "REQUEUED"})
    study("status", str(out))
    for task in range(count):
        again = run_task(log, task, restarts=1 if task == 0 else 0)
        resumed = [line for line in (again.stdout + again.stderr).splitlines()
                   if "Restoring states" in line and "best.ckpt" not in line]  # the fit's, not the test's
        print(f"== node: task {task}{' (requeued)' if task == 0 else ''}: exit {again.returncode}"
              + (f"; {resumed[0].strip()}" if resumed else ""), flush=True)
        set_states(log, {**dict.fromkeys(jobs, "PENDING"), **dict.fromkeys(jobs[: task + 1], "COMPLETED")})
    study("status", str(out))
    study("collect", str(out))
    return 0


class Preempt(pl.Callback):
    """SIGUSR1 after the first training batch when ``STANDIN_PREEMPT`` is set (and the job was not
    requeued yet), then the end of the process, as SLURM ends a job it requeues."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object, **kwargs: object) -> None:
        if trainer.global_step == 1 and os.environ.get("STANDIN_PREEMPT") and not os.environ.get("SLURM_RESTART_COUNT"):
            os.kill(os.getpid(), signal.SIGUSR1)
            os._exit(143)  # 128 + SIGTERM


if __name__ == "__main__":
    sys.exit(main())
