"""Lightning's Trainer, with batch limits that the command line can give as integers and a
precision default that follows the hardware (and a word when a given precision does not)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from core.inference import emulated_precision, fast_bf16
from core.io import DataWarning

BatchLimit = int | float | None


def default_precision(accelerator: Any = "auto") -> str:
    """``bf16-mixed`` for a run on a CPU with native bfloat16 (AVX512-BF16, AMX: the demo's
    fit 1.84x faster than float32 on a 2-core Xeon, its test DSC within 0.002), else ``32-true``
    (Lightning's default; emulated bf16 is many times slower than float32). GPU runs choose
    theirs in a preset (``configs/trainer/gpu.yaml``). Whole volumes are evaluated in float32
    either way (the model's ``inference_precision``)."""
    on_cpu = str(accelerator) == "cpu" or (str(accelerator) == "auto" and not torch.cuda.is_available()
                                           and not torch.backends.mps.is_available())
    return "bf16-mixed" if on_cpu and fast_bf16("cpu") else "32-true"


def precision_advice(device: torch.device, precision: str) -> str | None:
    """What to say of a half ``precision`` that ``device`` only emulates, with the precision that
    runs natively there (float16 with loss scaling on a GPU, float32 on a CPU); None when it is
    native or no half precision."""
    problem = emulated_precision(device, precision)
    if problem is None:
        return None
    remedy = ("float16 with loss scaling: --trainer.precision 16-mixed" if device.type == "cuda"
              else "float32: --trainer.precision 32-true")
    return f"{problem}; train in {remedy}"


class Trainer(pl.Trainer):
    """``pytorch_lightning.Trainer`` whose ``limit_*_batches`` are typed ``int | float``, and
    whose ``precision``, unless given, is :func:`default_precision`; a half precision the device
    only emulates (a GPU preset's ``bf16-mixed`` on an AVX2 CPU or a V100) is said at once.

    Lightning declares the limits ``float | int``, so LightningCLI parsed
    ``--trainer.limit_val_batches 1`` as 1.0, *all* batches, where Lightning reads an int as a
    number of batches: a cheap run validating one volume could not be asked for. Here an integer
    stays an integer (one batch) and a fraction a fraction; everything else is Lightning's."""

    def __init__(self, *args: Any, limit_train_batches: BatchLimit = None, limit_val_batches: BatchLimit = None,
                 limit_test_batches: BatchLimit = None, limit_predict_batches: BatchLimit = None,
                 precision: _PRECISION_INPUT | None = None, **kwargs: Any) -> None:
        chosen = precision is None
        if chosen:
            precision = default_precision(kwargs.get("accelerator", "auto"))
        super().__init__(*args, limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
                         precision=precision, **kwargs)
        advice = precision_advice(self.strategy.root_device, self.precision)
        if advice:
            rank_zero_warn(advice, category=DataWarning)
        if chosen and self.precision == "bf16-mixed":  # said, so that a float32 run is one flag away
            rank_zero_info("trainer.precision bf16-mixed: this CPU runs bfloat16 natively (AVX512-BF16 or AMX); "
                           "whole volumes are still evaluated in float32; "
                           "--trainer.precision 32-true trains in float32")
