"""One folder per training run: ``{run}`` in ``checkpoint.dirpath`` becomes a run id.

Why a module of its own: which folder a fit writes decides whether results survive. A second
run must never replace the first one's ``best.ckpt``; the processes of one DDP run must agree on
one folder; a resumed run continues in its own folder; and a SLURM job that Lightning requeued
(SIGUSR1 before the time limit -> ``hpc_ckpt_<n>.ckpt`` -> ``scontrol requeue``) must find its
folder and its newest checkpoint again, not start a fresh run beside it.

Run ids: ``YYYYmmdd-HHMMSS`` (``-2``, ``-3``... within one second). Under SLURM,
``slurm<job id>-<hash of the command line>``: identical in every task of the job (srun starts
them independently, so time stamps could differ) and after a requeue (same job id, same command),
different for two commands run in one job.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_fabric.plugins.environments import SLURMEnvironment

from core.checkpoint import newest_checkpoint
from core.io import DataError

RUN_ID_VARIABLE = "BRAINSEG_RUN_ID"  # shared with the DDP processes Lightning starts by re-running the command


@dataclass(frozen=True)
class RunTemplate:
    """A checkpoint folder with ``{run}`` in it, e.g. ``runs/demo/{run}/checkpoints``; the run
    folder is the path component holding ``{run}`` (``runs/demo/<run id>``)."""

    dirpath: str

    def __post_init__(self) -> None:
        if self.dirpath.count("{run}") != 1:
            raise DataError(f"checkpoint.dirpath {self.dirpath!r}: '{{run}}' must occur once")

    def _parts(self) -> tuple[str, str, str]:
        """(path up to the run component, text before and after ``{run}`` in that component)."""
        head, tail = self.dirpath.split("{run}")
        parent, separator, before = head.rpartition("/")
        return parent + separator, before, tail.split("/")[0]

    def folder(self, run_id: str) -> Path:
        parent, before, after = self._parts()
        return Path(f"{parent}{before}{run_id}{after}")

    def checkpoint_dir(self, run_id: str) -> str:
        return self.dirpath.replace("{run}", run_id)

    def run_id_of(self, path: Path) -> str | None:
        """The run whose folder holds ``path`` (a checkpoint of it), or None."""
        _, before, after = self._parts()
        for ancestor in Path(path).resolve().parents:
            name = ancestor.name
            if name.startswith(before) and name.endswith(after) and len(name) > len(before) + len(after):
                run_id = name[len(before):len(name) - len(after)]
                if self.folder(run_id).resolve() == ancestor:
                    return run_id
        return None

    def new_run_id(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_id, n = stamp, 1
        while self.folder(run_id).exists():
            n += 1
            run_id = f"{stamp}-{n}"
        return run_id


def slurm_run_id(command: Sequence[str]) -> str | None:
    """The run id of a SLURM job's fit (see the module's docstring), or None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not SLURMEnvironment.detect():
        return None
    return f"slurm{job}-{hashlib.sha256(chr(0).join(command).encode()).hexdigest()[:8]}"


def requeued() -> bool:
    """This SLURM job is running again after a requeue or a node failure."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


@dataclass(frozen=True)
class RunFolder:
    """Where a fit writes and what it resumes from."""

    checkpoint_dir: str | None
    folder: Path | None  # the run folder, when checkpoint.dirpath holds {run}
    resume_from: str | None  # --ckpt_path, or a requeued SLURM job's newest checkpoint


def choose_run_folder(dirpath: str | None, resume: str | None, command: Sequence[str]) -> RunFolder:
    """Fill ``{run}`` in ``dirpath``: the run of ``resume`` when resuming one of its checkpoints,
    the job's run under SLURM (resuming its newest checkpoint after a requeue), the parent's
    run in a DDP process Lightning started, else a new run. A folder that already holds
    checkpoints is refused unless the fit resumes."""
    ddp_child = int(os.environ.get("LOCAL_RANK", "0")) > 0
    folder = None
    if dirpath and "{run}" in dirpath:
        template = RunTemplate(dirpath)
        slurm_id = slurm_run_id(command)
        if resume:
            run_id = template.run_id_of(Path(resume)) or template.new_run_id()
        elif slurm_id:
            run_id = slurm_id
            if requeued():
                newest = newest_checkpoint(template.folder(run_id), template.checkpoint_dir(run_id))
                resume = str(newest) if newest else None
        elif ddp_child and RUN_ID_VARIABLE in os.environ:
            run_id = os.environ[RUN_ID_VARIABLE]
        else:
            run_id = template.new_run_id()
        os.environ[RUN_ID_VARIABLE] = run_id
        dirpath, folder = template.checkpoint_dir(run_id), template.folder(run_id)
    if dirpath and not resume and not ddp_child and any(Path(dirpath).glob("*.ckpt")):
        raise DataError(f"{dirpath}: already holds the checkpoints of another run; choose another "
                        "checkpoint.dirpath (or '{run}' in it for a new folder per run), or resume with --ckpt_path")
    return RunFolder(dirpath, folder, resume)


def link_latest(run: Path) -> bool:
    """Point ``<run's folder>/latest`` at ``run`` (a relative symlink, replaced atomically);
    False, touching nothing, where ``latest`` is something else (a file or folder of the user's)."""
    link = run.parent / "latest"
    if link.exists() and not link.is_symlink():
        return False
    _point_latest(run.parent, run.name)
    return True


def _point_latest(parent: Path, target: str) -> None:
    """``<parent>/latest`` -> ``target`` (relative), replaced atomically: never missing meanwhile."""
    tmp = parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, parent / "latest")


def latest_target(parent: Path) -> str | None:
    """Where ``<parent>/latest`` points now (None: no such link of ours)."""
    link = Path(parent) / "latest"
    return os.readlink(link) if link.is_symlink() else None


def take_back_run(run: Path, previous: str | None) -> bool:
    """After a fit that failed before writing any checkpoint (bad data, a refused setting): point
    ``latest`` back at ``previous`` (no link when there was none) if it still points at ``run``,
    and remove ``run``'s folder when nothing was written into it (empty folders only), so that
    ``<runs>/latest/checkpoints/best.ckpt`` still names the last run that trained. False, touching
    nothing, when the run wrote a checkpoint."""
    if any(Path(run).rglob("*.ckpt")):
        return False
    if latest_target(run.parent) == run.name:
        if previous is None:
            (run.parent / "latest").unlink()
        else:
            _point_latest(run.parent, previous)
    for folder in sorted((p for p in [run, *Path(run).rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    return True
