"""The state of a study's cells, one small file per cell, so that any process (the one that
submitted the study, the job running a cell, ``study.py status`` on a login node) reads the same
truth without a server: ``<cell>/cell.json`` written atomically, a lock held while the cell
runs, and the scheduler asked whether a submitted job is still alive.

States: ``submitted`` (a job holds it; pending or not started), ``running``, ``done`` (its test
report exists), ``failed`` (an error; the last line and the log are kept), ``interrupted``
(stopped by a signal or Ctrl-C; resumable without ``--retry-failed``)."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import socket
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.io import write_text_atomically

RECORD = "cell.json"
# study.py --rerun-changed moves the folders of cells run with other settings to
# ``<study>.replaced/<time>/``: kept, but out of every comparison of runs found below a folder.
SET_ASIDE_SUFFIX = ".replaced"
LOCK = ".cell.lock"
ACTIVE = ("submitted", "running")
# sacct states of a job that may still run the cell (anything else has ended).
SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
               "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}


class CellBusy(RuntimeError):
    """Another process is running this cell now."""


def report_path(folder: Path) -> Path:
    """The cell's test report (``train.py test``'s ``metrics.csv``): there when the cell is done."""
    return Path(folder) / "test" / "metrics.csv"


def is_done(folder: Path) -> bool:
    return report_path(folder).is_file()


def read_record(folder: Path) -> dict[str, Any]:
    """The cell's record; ``{}`` for a cell never submitted."""
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        return {"state": "failed", "error": f"{path}: unreadable record ({error})"}


def write_record(folder: Path, **fields: Any) -> dict[str, Any]:
    """Update the cell's record with ``fields`` (atomically: a reader sees the old or the new)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**read_record(folder), **fields}
    write_text_atomically(folder / RECORD, json.dumps(record, indent=1))
    return record


@contextmanager
def cell_lock(folder: Path) -> Iterator[None]:
    """Held while a process runs the cell; a second process asking for it gets ``CellBusy``.
    ``flock`` is released by the kernel when the holder dies, so a killed job leaves no stale lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise CellBusy(f"{folder}: another process is running this cell") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mean_test_dice(folder: Path) -> float | None:
    """The cell's test DSC, the mean over its subjects and structures (``test/metrics.csv``)."""
    try:
        with open(report_path(folder), newline="") as handle:
            values = [float(row["dice"]) for row in csv.DictReader(handle) if row.get("dice") not in ("", "nan", None)]
    except (OSError, KeyError, ValueError):
        return None
    return sum(values) / len(values) if values else None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Ask ``sacct`` for the jobs' states (the newest attempt of each); ``{}`` when it cannot say."""
    job_ids = sorted(set(job_ids))
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-j", ",".join(job_ids), "-o", "JobID,State", "--parsable2", "--noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job in job_ids and state:
            states[job] = state.split()[0]  # "CANCELLED by 1000" -> CANCELLED; a later row is a later attempt
    return states


def scheduler_states(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``sacct``'s state of each SLURM job among ``records`` (one call for all of them)."""
    return slurm_states(str(r.get("job_id")) for r in records if r.get("launcher") == "slurm")


def local_job_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the local process of ``record`` still runs; None when it ran on another host."""
    if record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(record["job_id"]), 0)
    except (KeyError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def current_state(folder: Path, record: Mapping[str, Any], slurm: Mapping[str, str] | None = None) -> str:
    """The cell's state now: the record's, unless its test report exists (done) or the job that
    held it has ended without saying so (killed, out of memory): then ``failed``."""
    if is_done(folder):
        return "done"
    state = record.get("state", "pending")
    if state not in ACTIVE:
        return state
    if record.get("launcher") == "slurm":
        scheduler = (slurm or {}).get(str(record.get("job_id")))
        alive = None if scheduler is None else scheduler in SLURM_ALIVE
    else:
        alive = local_job_alive(record)
    return "failed" if alive is False else state
