"""The suite's own machinery. Under ``make test`` (pytest-xdist, ``--dist loadgroup``) the tests
that share a costly module fixture carry an ``xdist_group`` so that one worker builds it once.
pytest 9.2 with xdist 3.8 dropped the group silently (pytest-xdist#1386): the DDP launch then ran
on both workers. This test fails when the group no longer reaches the scheduler."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.xdist_group("suite_setup")
def test_an_xdist_group_reaches_the_scheduler(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only under pytest-xdist with --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@suite_setup"), request.node.nodeid


def test_processes_the_tests_start_keep_their_temporary_files_in_pytests_folder(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A process the suite starts and kills (a preempted SLURM task) leaves what it put in the
    temporary folder; that folder is then one pytest prunes, not the system's."""
    made = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp('-probe'))"],
                          capture_output=True, text=True, check=True, env=os.environ.copy()).stdout.strip()
    assert Path(made).is_dir() and Path(made).is_relative_to(tmp_path_factory.getbasetemp()), made
