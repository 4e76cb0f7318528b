"""Learning-rate schedules that run to the end of training (lightning_modules/schedules.py)."""

from functools import partial

import pytest
import torch

from lightning_modules import SegmentationModule
from lightning_modules.schedules import CosineLR, PolyLR


def lr_after(scheduler_class: type, steps: int, **kwargs) -> float:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_class(optimizer, **kwargs)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_poly_and_cosine_by_hand() -> None:
    assert lr_after(PolyLR, 5, total_iters=10) == pytest.approx(0.5 ** 0.9)  # nnU-Net's (1 - t/T)^0.9
    assert lr_after(PolyLR, 10, total_iters=10) == 0.0
    assert lr_after(PolyLR, 3, total_iters=4, power=1.0) == pytest.approx(0.25)
    assert lr_after(CosineLR, 5, total_iters=10) == pytest.approx(0.5)
    assert lr_after(CosineLR, 10, total_iters=10, min_factor=0.1) == pytest.approx(0.1)
    assert lr_after(PolyLR, 7) == 1.0  # length unknown: constant until it is set


def test_the_module_sets_the_length_from_the_trainer() -> None:
    module = SegmentationModule(network_kwargs={"base_features": 2}, optimizer=partial(torch.optim.SGD, lr=0.1))

    class Trainer:
        estimated_stepping_batches = 40

    module.trainer = Trainer()  # what configure_optimizers reads of a real Trainer
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, PolyLR) and scheduler.total_iters == 40
    assert config["lr_scheduler"]["interval"] == "step"
    assert type(config["optimizer"]) is torch.optim.SGD and config["optimizer"].defaults["lr"] == 0.1
