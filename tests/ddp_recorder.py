"""A callback for tests/test_ddp.py: after validation, each process writes the subjects it
validated (``<out>.rank<r>.json``) and process 0 the logged metrics (``<out>``)."""

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
