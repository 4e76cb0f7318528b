"""Learning-rate schedules that run to the end of training without being told its length.

``PolyLR`` (nnU-Net's ``lr * (1 - t / T) ** 0.9``) and ``CosineLR`` step once per optimiser
step; with ``total_iters`` left out, :class:`~lightning_modules.SegmentationModule` sets it to
the Trainer's ``estimated_stepping_batches``, so the schedule ends exactly where training does.
Any other ``torch.optim.lr_scheduler`` class can be configured instead (LightningCLI class path).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class _ToTheEnd(LambdaLR):
    """A schedule of ``t / total_iters`` in [0, 1]; ``total_iters`` may be set after construction."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None) -> None:
        self.total_iters = total_iters
        super().__init__(optimizer, self._factor)

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed fit's state, with this fit's length where one is set: a run extended past its
        first end (``--ckpt_path last.ckpt --trainer.max_epochs`` more) stretches the schedule to
        the new end, instead of training on at the old end's rate of 0."""
        total = self.total_iters
        super().load_state_dict(state_dict)
        if total is not None:
            self.total_iters = total

    def _progress(self, step: int) -> float:
        if self.total_iters is None:  # not yet known (construction, or used outside a Trainer)
            return 0.0
        return min(1.0, step / max(1, self.total_iters))

    def _factor(self, step: int) -> float:
        raise NotImplementedError


class PolyLR(_ToTheEnd):
    """``lr * (1 - t / total_iters) ** power`` (nnU-Net: power 0.9), per optimiser step."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, power: float = 0.9) -> None:
        self.power = power
        super().__init__(optimizer, total_iters)

    def _factor(self, step: int) -> float:
        return (1.0 - self._progress(step)) ** self.power


class CosineLR(_ToTheEnd):
    """Half a cosine from ``lr`` to ``lr * min_factor`` over ``total_iters`` optimiser steps."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, min_factor: float = 0.0) -> None:
        self.min_factor = min_factor
        super().__init__(optimizer, total_iters)

    def _factor(self, step: int) -> float:
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * self._progress(step)))
