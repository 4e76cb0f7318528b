"""Run a study: a grid of networks x datasets x folds x seeds, each cell trained and tested
with its own checkpoint, then one comparison table; on this machine or on a SLURM cluster.

    python study.py configs/studies/demo.yaml                      # the whole grid, cell after cell
    python study.py configs/studies/demo.yaml --networks unet3d --seeds 0 --smoke
    python study.py configs/studies/demo.yaml --max-parallel 2     # two cells at once on this machine
    python study.py configs/studies/demo.yaml --gpus 0,1,2,3       # one cell per GPU, never two on one
    python study.py configs/studies/thesis.yaml --launcher slurm --set iseg2017.data_dir=/data/iSeg-2017-Training
    python study.py status runs/studies/thesis                     # pending / running / done / failed, per cell
    python study.py collect runs/studies/thesis                    # the comparison (partial ones say so)
    python study.py configs/studies/demo.yaml --dry-run            # print the commands only
    python study.py configs/studies/thesis.yaml --launcher slurm --dry-run   # and the job array's sbatch script

A study file names the configs every cell starts from, the datasets and networks (each its
configs and CLI overrides), the seeds and folds, overrides for chosen cells and, for
``--launcher slurm``, the resources of one cell (``slurm:``; see ``configs/studies/``). Each cell
is a run folder ``<output>/<dataset>/<network>/<fold-seed>/`` holding ``checkpoints/``,
``test/`` (the report of its own ``best.ckpt``), its logs and ``cell.json`` (its state); W&B
runs are grouped by study and tagged with network, dataset, fold and seed.

Each cell is one job of submitit (the library behind Hydra's SLURM launcher): a process of
this machine (``--launcher local``) or a task of one SLURM job array (``--launcher slurm``), in
which the cell's ``train.py fit`` and then ``train.py test`` run. Resumable: a cell whose test
report exists is skipped; one with checkpoints but no report resumes from its newest
checkpoint; a failed one runs again only with ``--retry-failed``; a cell held by a live job
is never started twice (its record names the job, and a lock is held while it runs). On SLURM,
the preemption signal (USR1, ``signal_delay_s`` before the end) makes Lightning save the cell's
state and requeue its array task, which then resumes from that checkpoint in its own folder.
``--smoke`` makes every cell cheap (2 training batches, one validation volume, no sanity pass,
no window overlap): it checks the whole grid runs before the real study is started.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.io import DataError, file_sha256, write_text_atomically
from core.study_state import (
    ACTIVE,
    SET_ASIDE_SUFFIX,
    CellBusy,
    cell_lock,
    current_state,
    is_done,
    last_line,
    mean_test_dice,
    read_record,
    scheduler_states,
    write_record,
)

ROOT = Path(__file__).resolve().parent
# What --smoke adds to every cell (a study file's ``smoke:`` mapping adds to or replaces these).
SMOKE = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.check_val_every_n_epoch": 1,
    "trainer.log_every_n_steps": 1,
    "model.sw_overlap": 0.0,
}
LAUNCHERS = ("local", "slurm")
# A cell's resources on SLURM (the study file's ``slurm:`` mapping); every other sbatch option
# goes into ``sbatch:`` (e.g. {constraint: a100, mail-type: END}).
SLURM_RESOURCES = {"partition": None, "account": None, "qos": None, "gpus": 1, "cpus": 8, "mem_gb": 32,
                   "time_min": 24 * 60, "signal_delay_s": 120, "sbatch": {}, "setup": []}
LOCAL_TIMEOUT_MIN = 30 * 24 * 60  # submitit's local executor ends a job after its timeout (default 2 min)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    network: str
    seed: int
    fold: int | None
    configs: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"fold{self.fold}-"
        return f"{self.dataset}/{self.network}/{fold}seed{self.seed}"


@dataclass
class Study:
    """A study file, read and checked."""

    name: str
    configs: list[str]
    datasets: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    seeds: list[int]
    folds: list[int | None]
    args: dict[str, Any]
    overrides: list[dict[str, Any]]
    smoke: dict[str, Any]
    wandb: bool
    source: Path
    slurm: dict[str, Any] = field(default_factory=lambda: dict(SLURM_RESOURCES))

    @classmethod
    def from_file(cls, path: str | Path) -> Study:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: study file not found")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"name", "configs", "datasets", "networks", "seeds", "folds", "args", "overrides",
                               "smoke", "wandb", "slurm"}
        if unknown:
            raise DataError(f"{path}: unknown keys {sorted(unknown)}")
        slurm = dict(data.get("slurm") or {})
        if set(slurm) - set(SLURM_RESOURCES):
            raise DataError(f"{path}: unknown slurm keys {sorted(set(slurm) - set(SLURM_RESOURCES))}; "
                            f"known: {sorted(SLURM_RESOURCES)} (other sbatch options go under 'sbatch:')")
        for key in ("datasets", "networks"):
            if not data.get(key):
                raise DataError(f"{path}: '{key}' must name at least one entry")
        return cls(name=str(data.get("name") or path.stem), configs=list(data.get("configs") or []),
                   datasets={k: dict(v or {}) for k, v in data["datasets"].items()},
                   networks={k: dict(v or {}) for k, v in data["networks"].items()},
                   seeds=[int(s) for s in data.get("seeds") or [0]],
                   folds=[int(f) for f in data.get("folds") or []] or [None],
                   args=dict(data.get("args") or {}), overrides=list(data.get("overrides") or []),
                   smoke={**SMOKE, **(data.get("smoke") or {})}, wandb=bool(data.get("wandb", True)), source=path,
                   slurm={**SLURM_RESOURCES, **slurm})

    def cells(self, datasets: Sequence[str] | None = None, networks: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, folds: Sequence[int] | None = None) -> list[Cell]:
        """The grid, or the subset asked for on the command line (unknown names are errors)."""
        for asked, known, what in ((datasets, self.datasets, "dataset"), (networks, self.networks, "network")):
            missing = sorted(set(asked or ()) - set(known))
            if missing:
                raise DataError(f"{self.source}: no {what} {missing}; the study has {sorted(known)}")
        cells = []
        for dataset in datasets or self.datasets:
            for network in networks or self.networks:
                for fold in (folds if folds else self.folds):
                    for seed in (seeds if seeds else self.seeds):
                        entries = [self.datasets[dataset], self.networks[network]]
                        configs = [*self.configs, *(c for e in entries for c in e.get("configs") or [])]
                        args = {**self.args, **{k: v for e in entries for k, v in (e.get("args") or {}).items()}}
                        for override in self.overrides:
                            if (dataset in override.get("datasets", [dataset])
                                    and network in override.get("networks", [network])):
                                args.update(override.get("args") or {})
                        cells.append(Cell(dataset, network, seed, fold, tuple(configs), args))
        return cells


def as_cli(args: Mapping[str, Any]) -> list[str]:
    """``{"trainer.max_epochs": 2, "data.init_args.patch_size": [48, 48, 48]}`` -> CLI flags."""
    flags = []
    for key, value in args.items():
        flags += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return flags


def resume_from(folder: Path) -> Path | None:
    """The cell's newest state (``last.ckpt``, or the checkpoint Lightning saved on SLURM's
    preemption signal): decided when the cell runs, so a requeued job finds what it saved."""
    from core.checkpoint import newest_checkpoint

    return newest_checkpoint(folder, folder / "checkpoints")


@dataclass
class CellJob:
    """One cell as a job: ``train.py fit`` (resumed from the cell's newest checkpoint) and then
    ``train.py test``, in the job's process. What submitit pickles and runs, locally or on a node."""

    name: str
    folder: str
    fit: list[str]
    test: list[str]
    launcher: str = "local"
    threads: int | None = None

    def __call__(self) -> dict[str, Any]:
        folder = Path(self.folder)
        if int(os.environ.get("SLURM_PROCID", "0")) > 0:  # another task of a multi-GPU cell: train, record nothing
            self._run()
            return {"cell": self.name, "state": "done"}
        try:
            with cell_lock(folder):
                return self._run_recorded(folder)
        except CellBusy as busy:
            print(f"study.py: {self.name}: {busy}; not started twice", file=sys.stderr)
            return {"cell": self.name, "state": "busy"}

    def _run_recorded(self, folder: Path) -> dict[str, Any]:
        """Run the cell, its state in ``cell.json`` before and after; an error is recorded (its
        last line) and raised again, so that the job fails in the scheduler's eyes too."""
        if is_done(folder):
            return write_record(folder, state="done")
        write_record(folder, state="running", launcher=self.launcher, job_id=job_id(),
                     host=socket.gethostname(), started=time.time(), error=None)
        start, state, error, record = time.perf_counter(), "failed", None, {}
        try:
            self._run()
            state = "done" if is_done(folder) else "failed"
            error = None if state == "done" else "train.py test wrote no report"
        except BaseException as problem:
            from pytorch_lightning.utilities.exceptions import SIGTERMException

            if isinstance(problem, KeyboardInterrupt | SIGTERMException):  # Ctrl-C, scancel, a requeue's end
                state, error = "interrupted", type(problem).__name__
            elif isinstance(problem, SystemExit):  # the CLI refused its arguments: the message is in the log
                error = f"train.py exited with {problem.code}"
            elif isinstance(problem, DataError):  # bad input: its own one line names the file
                error = last_line(str(problem))
            else:
                error = last_line(f"{type(problem).__name__}: {problem}")
            raise
        finally:
            seconds = float(read_record(folder).get("seconds") or 0.0) + time.perf_counter() - start
            record = write_record(folder, state=state, error=error, seconds=seconds, ended=time.time(),
                                  test_dice=mean_test_dice(folder))
        return record

    def fit_args(self) -> list[str]:
        """``train.py fit``'s arguments, resuming the cell's newest checkpoint when it has one."""
        newest = resume_from(Path(self.folder))
        return self.fit + (["--ckpt_path", str(newest)] if newest else [])

    def _run(self) -> None:
        """Fit (resumed when the cell has a checkpoint), then test: Lightning's CLI, in this process."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        os.chdir(ROOT)  # the study's config paths are relative to the repository
        sys.argv[1:] = []  # the job runner's own arguments are not train.py's (LightningCLI reads both)
        from core.io import one_line_warnings
        from train import run_cli

        one_line_warnings("train.py")
        run_cli(self.fit_args())
        _finish_wandb_run()
        run_cli(self.test, save_config=False)
        _finish_wandb_run()


def _finish_wandb_run() -> None:
    """The fit's W&B run ends before the test starts one (the test resumes the checkpoint's run)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def job_id() -> str:
    """This job's id: the SLURM array task (``<array>_<index>``) or job, else this process' parent
    (submitit's local controller, the id its executor reported)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())


@dataclass
class Runner:
    """Turns cells into jobs and hands them to a launcher: submitit's local executor (processes of
    this machine, ``max_parallel`` at a time, one per GPU with ``gpus``) or its SLURM executor
    (one job array, ``max_parallel`` tasks at a time)."""

    study: Study
    output: Path
    smoke: bool = False
    dry_run: bool = False
    extra: list[str] = field(default_factory=list)
    launcher: str = "local"
    max_parallel: int = 1
    gpus: list[int] = field(default_factory=list)
    retry_failed: bool = False
    rerun_changed: bool = False

    def folder(self, cell: Cell) -> Path:
        return self.output / cell.name

    def settings(self, cell: Cell) -> dict[str, Any]:
        """What the study file decides of a cell, as its record keeps it: the arguments (its own
        folder written ``<cell>``, so a study folder may move; study.py's own command line aside,
        a choice of each submission) and each config file by its content."""
        folder = str(self.folder(cell))
        args = self.common(cell)
        args = args[:len(args) - len(self.extra)]
        configs = {}
        for config in cell.configs:
            path = Path(config) if Path(config).is_file() else ROOT / config  # as given, or a path in the repository
            configs[config] = file_sha256(path) if path.is_file() else None  # read once for all cells
        return {"args": [a.replace(folder, "<cell>") for a in args], "configs": configs}

    def changed(self, cells: Sequence[Cell]) -> dict[str, str]:
        """Cell -> what differs, for the cells whose folder holds a run of other settings than the
        study gives now (an edited study file or config); cells never submitted, or recorded
        before records kept settings, are not."""
        changes = {}
        for cell in cells:
            earlier = read_record(self.folder(cell)).get("settings")
            now = self.settings(cell)
            if earlier is None or earlier == now:
                continue
            edited = sorted(c for c in {*earlier.get("configs", {}), *now["configs"]}
                            if earlier.get("configs", {}).get(c) != now["configs"].get(c))
            gone = [a for a in earlier.get("args", []) if a not in now["args"]]
            new = [a for a in now["args"] if a not in earlier.get("args", [])]
            said = [f"{c} edited" for c in edited] + ([f"arguments {gone[:2]} -> {new[:2]}"] if gone or new else [])
            changes[cell.name] = "; ".join(said) or "arguments reordered"
        return changes

    def set_aside(self, cells: Sequence[Cell], changes: Mapping[str, str]) -> None:
        """Refuse, before any work, cells run with other settings; with ``rerun_changed`` move
        their folders to ``<study>.replaced/<time>/`` (never deleted, out of the study's way)."""
        changed = [c for c in cells if c.name in changes]
        if not changed:
            return
        listed = "; ".join(f"{c.name}: {changes[c.name]}" for c in changed[:3]) + (" ..." if len(changed) > 3 else "")
        if not self.rerun_changed:
            count = f"{len(changed)} cells were" if len(changed) > 1 else "1 cell was"
            raise DataError(f"{self.output}: {count} run with other settings than the study gives now ({listed}); "
                            "choose another --output, or pass --rerun-changed to run them again (their folders "
                            f"moved to {self.output}{SET_ASIDE_SUFFIX}/)")
        live = [c.name for c in changed if current_state(self.folder(c), read_record(self.folder(c)),
                                                         scheduler_states([read_record(self.folder(c))])) in ACTIVE]
        if live:
            raise DataError(f"cells {live} run with other settings are still running; wait for them or cancel them")
        aside = Path(f"{self.output}{SET_ASIDE_SUFFIX}") / time.strftime("%Y%m%d-%H%M%S")
        for cell in changed:
            target = aside / cell.name
            if self.dry_run:
                print(f"{cell.name}: run with other settings ({changes[cell.name]}); would move to {target}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            self.folder(cell).rename(target)
            print(f"{cell.name}: run with other settings ({changes[cell.name]}); moved to {target}", flush=True)

    def common(self, cell: Cell) -> list[str]:
        """The flags shared by the cell's fit and test."""
        args: dict[str, Any] = {**cell.args, "seed_everything": cell.seed}
        if cell.fold is not None:
            args["data.init_args.fold"] = cell.fold
        if self.smoke:
            args.update(self.study.smoke)
        if self.study.wandb:
            tags = [f"network:{cell.network}", f"dataset:{cell.dataset}", f"seed:{cell.seed}"]
            tags += [] if cell.fold is None else [f"fold:{cell.fold}"]
            args.update({"trainer.logger.init_args.group": self.study.name,
                         "trainer.logger.init_args.name": cell.name, "trainer.logger.init_args.tags": tags,
                         "trainer.logger.init_args.save_dir": str(self.folder(cell))})
        return [*(f for c in cell.configs for f in ("--config", c)), *as_cli(args), *self.extra]

    def job(self, cell: Cell) -> CellJob:
        folder = self.folder(cell)
        fit = ["fit", *self.common(cell), "--checkpoint.dirpath", str(folder / "checkpoints"),
               "--trainer.default_root_dir", str(folder)]
        test = ["test", *self.common(cell), "--ckpt_path", str(folder / "checkpoints" / "best.ckpt"),
                "--test_report.output_dir", str(folder / "test"), "--test_report.overwrite", "true",  # the cell's own
                "--trainer.default_root_dir", str(folder)]
        threads = None
        if self.launcher == "local" and not self.gpus and self.max_parallel > 1:
            threads = max(1, (os.cpu_count() or 1) // self.max_parallel)  # cells share the cores, not oversubscribe
        return CellJob(cell.name, str(folder), fit, test, launcher=self.launcher, threads=threads)

    def commands(self, cell: Cell) -> list[list[str]]:
        """What is left to do for the cell, as ``train.py`` commands: fit (resumed from its newest
        checkpoint), then test; none when its test report exists."""
        folder = self.folder(cell)
        if is_done(folder):
            return []
        job = self.job(cell)
        prefix = [sys.executable, "train.py"]
        return [[*prefix, *job.fit_args()], [*prefix, *job.test]]

    def to_run(self, cells: Sequence[Cell]) -> list[Cell]:
        """The cells to start now, each said in one line: not done ones that no live job holds,
        failed ones only with ``retry_failed``."""
        records = [read_record(self.folder(cell)) for cell in cells]
        slurm = scheduler_states(records)
        chosen = []
        for index, (cell, record) in enumerate(zip(cells, records, strict=True), start=1):
            folder = self.folder(cell)
            state = current_state(folder, record, slurm)
            prefix = f"[{index}/{len(cells)}] {cell.name}:"
            if state == "done":
                print(f"{prefix} finished earlier, skipped", flush=True)
            elif state in ACTIVE:
                print(f"{prefix} {state} as job {record.get('job_id')} ({record.get('launcher')}), skipped", flush=True)
            elif state == "failed" and not self.retry_failed:
                print(f"{prefix} failed earlier ({record.get('error') or 'no result'}), skipped; "
                      "--retry-failed runs it again", flush=True)
            else:
                resume = resume_from(folder)
                print(f"{prefix} " + (f"resumes from {resume}" if resume else "starts"), flush=True)
                chosen.append(cell)
        return chosen

    def run(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        """Start what is left of ``cells``; locally wait for them, on SLURM return once submitted.
        Returns one record per cell."""
        if self.launcher == "slurm" and not self.dry_run:
            check_slurm_commands()  # before any file is written
        self.set_aside(cells, self.changed(cells))
        chosen = self.to_run(cells)
        if self.dry_run:
            for cell in chosen:
                for command in self.commands(cell):
                    print("  " + shlex.join(command))
            if chosen and self.launcher == "slurm":
                print(f"the job array's script (sbatch would be given it; {len(chosen)} tasks, one a cell):\n"
                      + self.sbatch_script(len(chosen)))
            return []
        self.write_status(cells)
        if chosen and self.launcher == "slurm":
            self.submit_slurm(chosen)
        elif chosen:
            self.run_local(chosen)
        return self.write_status(cells)

    @property
    def job_logs(self) -> Path:
        """submitit's folder for the jobs' pickles and logs (``%j``: the job id)."""
        return self.output / ".submitit" / "%j"

    def executor(self, kind: str) -> Any:
        import submitit

        logs = self.job_logs
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(ROOT) not in paths:  # the jobs import this module by name (``study.CellJob``)
            os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
        if kind == "local":
            executor = submitit.LocalExecutor(folder=logs)
            executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
            return executor
        executor = submitit.SlurmExecutor(folder=logs)
        executor.update_parameters(**self.slurm_parameters())
        return executor

    def slurm_parameters(self) -> dict[str, Any]:
        """submitit's SLURM parameters for one cell of this study (the study file's ``slurm:``)."""
        resources = self.study.slurm
        gpus = int(resources["gpus"] or 0)
        sbatch = {"signal": f"USR1@{int(resources['signal_delay_s'])}",  # Lightning's: save, then requeue
                  **({"gres": f"gpu:{gpus}"} if gpus else {}), **dict(resources["sbatch"] or {})}
        return dict(
            job_name=f"study-{self.study.name}", time=int(resources["time_min"]), cpus_per_task=int(resources["cpus"]),
            mem=f"{int(float(resources['mem_gb']) * 1024)}MB",  # sbatch takes whole units
            ntasks_per_node=max(gpus, 1),  # one task per GPU: Lightning's DDP on SLURM
            partition=resources["partition"], account=resources["account"], qos=resources["qos"],
            array_parallelism=self.max_parallel, additional_parameters=sbatch,
            setup=[f"cd {shlex.quote(str(ROOT))}",
                   f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}", *resources["setup"]])

    def sbatch_script(self, tasks: int) -> str:
        """The script submitit gives ``sbatch`` for an array of ``tasks`` cells (its own writer,
        as it calls it for an array; written nowhere): what ``--dry-run`` shows before a study's
        jobs are queued, also where SLURM's commands are not installed."""
        from submitit.slurm.slurm import _make_sbatch_string

        logs = self.job_logs
        command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(logs))}"
        return _make_sbatch_string(command=command, folder=logs, map_count=tasks, **self.slurm_parameters())

    def submit_slurm(self, cells: Sequence[Cell]) -> None:
        executor = self.executor("slurm")
        jobs = []
        with executor.batch():
            for cell in cells:
                jobs.append(executor.submit(self.job(cell)))
        for cell, job in zip(cells, jobs, strict=True):
            write_record(self.folder(cell), state="submitted", launcher="slurm", job_id=str(job.job_id),
                         log=str(job.paths.stderr), submitted=time.time(), error=None, settings=self.settings(cell))
        array = str(jobs[0].job_id).split("_")[0]
        print(f"submitted {len(jobs)} cells as SLURM job array {array} (at most "
              f"{min(len(jobs), executor.parameters.get('array_parallelism', 256))} at a time); "
              f"follow it with: python study.py status {self.output}", flush=True)

    def run_local(self, cells: Sequence[Cell]) -> None:
        """Cells as processes of this machine: ``max_parallel`` at once (or one per GPU), the next
        started as soon as one ends."""
        executor = self.executor("local")
        free: list[int | None] = list(self.gpus) if self.gpus else [None] * max(1, self.max_parallel)
        pending: list[Cell] = list(cells)
        running: dict[Any, tuple[Cell, int | None]] = {}
        # Ctrl-C or a SIGTERM to this process stops its cells too (submitit's local jobs would
        # outlive it): each is interrupted, records so, and resumes when the study runs again.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            self._run_local(executor, free, pending, running)
        except KeyboardInterrupt:
            print(f"stopping {len(running)} running cells: " + ", ".join(c.name for c, _ in running.values()),
                  flush=True)
            for job in running:
                job.cancel(check=False)
            deadline = time.monotonic() + 120
            while any(not job.done() for job in running) and time.monotonic() < deadline:
                time.sleep(0.5)
            for cell, _ in running.values():  # stopped by us, whether or not its process said so
                if read_record(self.folder(cell)).get("state") in ACTIVE and not is_done(self.folder(cell)):
                    write_record(self.folder(cell), state="interrupted", error="study.py was stopped")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run_local(self, executor: Any, free: list[int | None], pending: list[Cell],
                   running: dict[Any, tuple[Cell, int | None]]) -> None:
        while pending or running:
            while pending and free:
                slot, cell = free.pop(0), pending.pop(0)
                executor.update_parameters(gpus_per_node=0 if slot is None else 1,
                                           visible_gpus=() if slot is None else (slot,))
                job = executor.submit(self.job(cell))
                write_record(self.folder(cell), state="submitted", launcher="local", job_id=str(job.job_id),
                             host=socket.gethostname(), log=str(job.paths.stderr), submitted=time.time(), error=None,
                             settings=self.settings(cell))
                where = "" if slot is None else f" on GPU {slot}"
                print(f"{cell.name}: started{where} (job {job.job_id}, log {job.paths.stderr})", flush=True)
                running[job] = (cell, slot)
            time.sleep(0.5)
            for job in [j for j in running if j.done()]:
                cell, slot = running.pop(job)
                free.append(slot)
                record = self._settle(cell, job)
                print(f"{cell.name}: {record.get('state')}" + (f" ({record['error']})" if record.get("error") else ""),
                      flush=True)

    def _settle(self, cell: Cell, job: Any) -> dict[str, Any]:
        """The cell's record once its job has ended; a job that died without writing it (killed,
        out of memory) leaves ``failed`` and the end of its log."""
        folder = self.folder(cell)
        record = read_record(folder)
        if record.get("state") in ACTIVE and not is_done(folder):
            try:
                job.result()
                error = "the job ended without a result"
            except Exception as failure:  # submitit's FailedJobError / UncompletedJobError: the log's end
                error = last_line(str(failure))
            record = write_record(folder, state="failed", error=error)
        return record

    def write_status(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        records = [{"cell": c.name, "folder": str(self.folder(c)), **read_record(self.folder(c))} for c in cells]
        status = {"study": self.study.name, "source": str(self.study.source), "smoke": self.smoke,
                  "launcher": self.launcher, "cells": records}
        write_text_atomically(self.output / "study.json", json.dumps(status, indent=1))
        return records


def status_rows(output: Path) -> list[dict[str, Any]]:
    """Each cell of the study in ``output`` (its ``study.json``) as it stands now."""
    path = output / "study.json"
    if not path.is_file():
        raise DataError(f"{output}: no study.json; is this a study folder (study.py ... --output)?")
    cells = json.loads(path.read_text())["cells"]
    records = {c["cell"]: read_record(Path(c["folder"])) for c in cells}
    slurm = scheduler_states(records.values())
    rows = []
    for cell in cells:
        folder, record = Path(cell["folder"]), records[cell["cell"]]
        state = current_state(folder, record, slurm)
        note = ""
        if state == "failed":
            scheduler = slurm.get(str(record.get("job_id")), "gone")
            ended = record.get("error") or f"the job ended without a result (scheduler: {scheduler})"
            note = ended + (f"; log {record['log']}" if record.get("log") else "")
        elif state in ("interrupted", "pending") and (newest := resume_from(folder)):
            note = f"resumes from {newest}"
        rows.append({"cell": cell["cell"], "state": state, "job": record.get("job_id") or "",
                     "dice": mean_test_dice(folder) if state == "done" else None,
                     "seconds": record.get("seconds"), "note": note})
    return rows


def status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| cell | state | job | test DSC | seconds | note |", "|---|---|---|---:|---:|---|"]
    for r in rows:
        dice = "" if r.get("dice") is None else f"{r['dice']:.4f}"
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.0f}"
        lines.append(f"| {r['cell']} | {r['state']} | {r['job']} | {dice} | {seconds} | {r['note']} |")
    counts = {state: sum(r["state"] == state for r in rows) for state in dict.fromkeys(r["state"] for r in rows)}
    return "\n".join(lines) + "\n" + ", ".join(f"{n} {state}" for state, n in counts.items())


def collect(output: Path) -> int:
    """The comparison of the study's finished cells, written into its folder; cells without a
    test report are named above the tables (a partial comparison says so)."""
    from compare_runs import compare, write_reports

    rows = status_rows(output)
    missing = [r for r in rows if r["state"] != "done"]
    comparison = compare([output])
    if missing:
        note = (f"**Partial comparison: {len(rows) - len(missing)} of {len(rows)} cells have a test report.** "
                "Missing: " + ", ".join(f"{r['cell']} ({r['state']})" for r in missing)
                + ". Group means are over the finished cells only.\n\n")
        comparison = dataclasses.replace(comparison, markdown=note + comparison.markdown)
    written = write_reports(comparison, output)
    print(comparison.markdown, end="")
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def check_slurm_commands() -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise DataError("--launcher slurm: no sbatch/srun on PATH; submit from a login node of the cluster")


def parse_gpus(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise DataError(f"--gpus {text!r}: expected GPU indices such as 0,1,2,3") from None
    if len(set(gpus)) != len(gpus):
        raise DataError(f"--gpus {text!r}: a GPU named twice would run two cells at once")
    if "CUDA_VISIBLE_DEVICES" not in os.environ:  # else the indices are the machine's, not torch's
        import torch

        count = torch.cuda.device_count()
        if max(gpus) >= count:  # a cell given a GPU that is not there would train on the CPU, silently
            raise DataError(f"--gpus {text!r}: this machine has {count} GPU(s) (indices 0-{count - 1})"
                            if count else f"--gpus {text!r}: this machine has no GPU")
    return gpus


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("status", "collect"):
        command = argparse.ArgumentParser(prog=f"study.py {argv[0]}")
        command.add_argument("folder", type=Path, help="the study's folder (its study.json)")
        folder = command.parse_args(argv[1:]).folder
        try:
            if argv[0] == "status":
                print(status_table(status_rows(folder)))
                return 0
            return collect(folder)
        except DataError as error:
            command.exit(2, f"study.py {argv[0]}: error: {error}\n")
    if argv and argv[0] == "run":
        argv = argv[1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study file (configs/studies/*.yaml)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets of the study")
    parser.add_argument("--networks", nargs="+", help="only these networks of the study")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--folds", nargs="+", type=int, help="only these folds")
    parser.add_argument("--smoke", action="store_true", help="every cell as cheap as it gets: does the grid run?")
    parser.add_argument("--output", type=Path, help="study folder (default: runs/studies/<name>[-smoke])")
    parser.add_argument("--set", action="append", default=[], metavar="DATASET.KEY=VALUE",
                        help="a dataset's CLI override, e.g. iseg2017.data_dir=/data/iSeg-2017-Training "
                             "(data_dir is short for data.init_args.data_dir)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: processes of this machine (default); slurm: one SLURM job array")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="cells at once: local (default 1, or one per --gpus), or the SLURM array's throttle")
    parser.add_argument("--gpus", help="local: GPU indices as nvidia-smi numbers them, e.g. 0,1,2,3: one cell "
                                       "per GPU, never two on one")
    parser.add_argument("--retry-failed", action="store_true", help="run the cells that failed earlier again")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="run again the cells run with other settings than the study now gives (an edited study "
                             "file or config), their folders moved to <output>.replaced/")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands (and with --launcher slurm the job array's script), run nothing")
    args, extra = parser.parse_known_args(argv)
    try:
        study = Study.from_file(args.study)
        for item in args.set:
            target, sep, value = item.partition("=")
            dataset, dot, key = target.partition(".")
            if not sep or not dot or dataset not in study.datasets:
                raise DataError(f"--set {item!r}: expected DATASET.KEY=VALUE, DATASET one of {sorted(study.datasets)}")
            key = "data.init_args.data_dir" if key == "data_dir" else key
            study.datasets[dataset].setdefault("args", {})[key] = yaml.safe_load(value)
        cells = study.cells(args.datasets, args.networks, args.seeds, args.folds)
        gpus = parse_gpus(args.gpus)
        if gpus and args.launcher != "local":
            raise DataError("--gpus is for --launcher local; on SLURM a cell's GPUs are the study's slurm: gpus")
        max_parallel = args.max_parallel or len(gpus) or (len(cells) if args.launcher == "slurm" else 1)
        if max_parallel < 1 or (gpus and max_parallel > len(gpus)):
            raise DataError(f"--max-parallel {max_parallel}: at least 1, and at most one cell per GPU ({len(gpus)})")
    except DataError as error:
        parser.exit(2, f"study.py: error: {error}\n")
    output = args.output or ROOT / "runs" / "studies" / (study.name + ("-smoke" if args.smoke else ""))
    runner = Runner(study, output, smoke=args.smoke, dry_run=args.dry_run, extra=list(extra), launcher=args.launcher,
                    max_parallel=max_parallel, gpus=gpus[:max_parallel], retry_failed=args.retry_failed,
                    rerun_changed=args.rerun_changed)
    start = time.perf_counter()
    try:
        runner.run(cells)
    except DataError as error:
        parser.exit(2, f"study.py: error: {error}\n")
    if args.dry_run or args.launcher == "slurm":
        return 0
    rows = status_rows(output)
    print(f"\nstudy {study.name}: {len(cells)} cells in {time.perf_counter() - start:.0f} s\n" + status_table(rows))
    if any(r["state"] == "done" for r in rows):
        collect(output)
    return 0 if all(r["state"] == "done" for r in rows) else 1


if __name__ == "__main__":
    from study import main as study_main  # the module by its import name: submitit pickles its jobs by reference

    sys.exit(study_main())
