"""Callbacks for the tests that run train.py in subprocesses (tests/test_ddp.py): ``Recorder``
writes what each process validated (``<out>.rank<r>.json``) and process 0 the logged metrics
(``<out>``); ``SendSignal`` sends a signal to the process during training."""

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class Recorder(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.subjects: list[str] = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.subjects += list(batch["subject"])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank = trainer.global_rank
        (self.out.parent / f"{self.out.name}.rank{rank}.json").write_text(json.dumps(self.subjects))
        if rank == 0:
            self.out.write_text(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items()}))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            self.out.write_text(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items()}))


class SendSignal(pl.Callback):
    """Sends ``signal`` to this process after training batch ``after_batch`` (what SLURM does
    before a job's time limit), then with ``then_exit`` ends the process as SLURM ends a job it
    requeues. A requeued job (``SLURM_RESTART_COUNT`` set) is not signalled again."""

    def __init__(self, signal: str = "SIGUSR1", after_batch: int = 1, then_exit: bool = False) -> None:
        self.signal, self.after_batch, self.then_exit = signal, after_batch, then_exit

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        import os
        import signal

        if trainer.global_step == self.after_batch and not os.environ.get("SLURM_RESTART_COUNT"):
            os.kill(os.getpid(), getattr(signal, self.signal))
            if self.then_exit:
                os._exit(143)  # 128 + SIGTERM
