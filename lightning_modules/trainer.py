"""Lightning's Trainer, with batch limits that the command line can give as integers."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

BatchLimit = int | float | None


class Trainer(pl.Trainer):
    """``pytorch_lightning.Trainer`` whose ``limit_*_batches`` are typed ``int | float``.

    Lightning declares them ``float | int``, so LightningCLI parsed ``--trainer.limit_val_batches 1``
    as 1.0, *all* batches, where Lightning reads an int as a number of batches: a cheap run
    validating one volume could not be asked for. Here an integer stays an integer (one batch)
    and a fraction a fraction; everything else is Lightning's."""

    def __init__(self, *args: Any, limit_train_batches: BatchLimit = None, limit_val_batches: BatchLimit = None,
                 limit_test_batches: BatchLimit = None, limit_predict_batches: BatchLimit = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches, **kwargs)
