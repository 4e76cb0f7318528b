"""Checkpoints are written atomically: a failed save (a full disk) leaves the previous checkpoint
intact and no partial or temporary file (lightning_modules/checkpoint_io.py)."""

import errno
import os
import re
from pathlib import Path

import pytest
import torch

import lightning_modules.checkpoint_io as checkpoint_io
from core.io import DataError
from lightning_modules.checkpoint_io import AtomicCheckpointIO

from conftest import tiny_run_args


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "best.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the umask's mode, not the temp file's 0600

    def disk_full(obj: object, target: Path) -> None:
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full)
    with pytest.raises(OSError, match=r"best\.ckpt: cannot write \(No space left on device; [\d.]+ MiB free there\)"
                       ) as error:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert isinstance(error.value, DataError) and error.value.errno == errno.ENOSPC  # train.py: one line, exit 2
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_the_cli_trainer_writes_checkpoints_atomically() -> None:
    from train import run_cli

    cli = run_cli(["--config", "configs/demo.yaml", "--data.init_args.cache_dir", "null", "--trainer.logger", "false"],
                  run=False, save_config=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_full_disk_during_fit_is_one_line(tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``train.py fit`` whose checkpoint folder fills up: one line naming the checkpoint, exit 2."""
    import sys

    import train

    def disk_full(obj: object, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full)
    monkeypatch.setattr(sys, "argv", ["train.py", *tiny_run_args("fit", tiny_demo_dir, tmp_path,
                                                                   "--trainer.max_epochs", "1")])
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1, error
    assert re.match(rf"train\.py: error: {tmp_path}/checkpoints/\w+\.ckpt: cannot write \(No space left on device",
                    error), error
