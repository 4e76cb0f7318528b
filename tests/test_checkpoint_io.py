"""Checkpoints are written atomically: a failed save (a full disk) leaves the previous checkpoint
intact and no partial or temporary file (lightning_modules/checkpoint_io.py)."""

import errno
import os
from pathlib import Path

import pytest
import torch

import lightning_modules.checkpoint_io as checkpoint_io
from lightning_modules.checkpoint_io import AtomicCheckpointIO


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
    with pytest.raises(OSError, match=r"best\.ckpt: cannot write \(No space left on device; [\d.]+ MiB free there\)"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_the_cli_trainer_writes_checkpoints_atomically() -> None:
    from train import run_cli

    cli = run_cli(["--config", "configs/demo.yaml", "--data.init_args.cache_dir", "null", "--trainer.logger", "false"],
                  run=False, save_config=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
