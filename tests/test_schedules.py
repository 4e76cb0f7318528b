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


def test_a_resumed_schedule_runs_to_the_end_of_the_fit_that_resumes_it() -> None:
    """A run extended past its end (more epochs on resume): the state of the old run, the length
    of the new one, so the rate picks up where (1 - t/T_new)^0.9 is, not at the old end's 0."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = PolyLR(optimizer, total_iters=10)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0
    resumed_optimizer = torch.optim.SGD([parameter], lr=1.0)
    resumed = PolyLR(resumed_optimizer)
    resumed.total_iters = 20  # as configure_optimizers sets it from the resumed Trainer
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    resumed_optimizer.step()
    resumed.step()
    assert resumed.total_iters == 20 and resumed.last_epoch == 11
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx((1 - 11 / 20) ** 0.9)
    unset = PolyLR(torch.optim.SGD([parameter], lr=1.0))  # used outside a Trainer: the saved length
    unset.load_state_dict(scheduler.state_dict())
    assert unset.total_iters == 10
