import pytest
import torch
from monai.networks.utils import one_hot

from lightning_modules import SegmentationModule
from lightning_modules.callbacks import format_dice_table
from lightning_modules.losses import build_loss


def small_module(**kwargs) -> SegmentationModule:
    args = {"in_channels": 2, "num_classes": 4, "class_names": ["background", "CSF", "GM", "WM"],
            "network_kwargs": {"base_features": 2}, "roi_size": (8, 8, 8), "sw_batch_size": 2}
    args.update(kwargs)
    return SegmentationModule(**args)


def test_dice_is_hard_label_per_region_without_background() -> None:
    module = small_module()
    label = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    label[0, 0, 0, :2] = 1          # 8 CSF voxels
    label[0, 0, 1] = 2              # 16 GM voxels; no WM at all
    prediction = label.clone()
    prediction[0, 0, 0, 0] = 0      # 4 CSF voxels missed
    prediction[0, 0, 2, 0] = 2      # 4 background voxels called GM
    scores = module.test_dice(y_pred=one_hot(prediction, 4), y=one_hot(label, 4))
    # CSF: 2*4 / (4 + 8) = 2/3; GM: 2*16 / (20 + 16) = 8/9; WM absent from truth: NaN.
    assert scores.shape == (1, 3)
    assert scores[0, 0].item() == pytest.approx(2 / 3)
    assert scores[0, 1].item() == pytest.approx(8 / 9)
    assert torch.isnan(scores[0, 2])


def test_dice_table_means_skip_absent_regions() -> None:
    table = format_dice_table([("subject-9", [0.5, 1.0, float("nan")]), ("subject-10", [1.0, 0.5, 0.8])],
                              ["CSF", "GM", "WM"])
    lines = table.splitlines()
    assert lines[2].split() == ["subject-9", "0.5000", "1.0000", "nan", "0.7500"]
    assert lines[-1].split() == ["mean", "0.7500", "0.7500", "0.8000", "0.7667"]


@pytest.mark.parametrize("name", ["dice", "ce", "dice_ce"])
def test_losses_are_low_for_confident_correct_logits(name: str) -> None:
    loss_fn = build_loss(name)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    good = one_hot(target, 3) * 20.0
    bad = one_hot((target + 1) % 3, 3) * 20.0
    assert loss_fn(good, target) < 0.01
    assert loss_fn(bad, target) > 0.9
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")


def test_sliding_window_covers_volumes_of_any_size() -> None:
    module = small_module().eval()
    with torch.no_grad():
        logits = module.predict_logits(torch.randn(1, 2, 13, 10, 19))
    assert logits.shape == (1, 4, 13, 10, 19)


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    module = small_module(network_kwargs={"base_features": 4}, lr=0.01, lr_schedule="constant")
    optimizer = module.configure_optimizers()
    image = torch.randn(2, 2, 16, 16, 16)
    batch = {"image": image, "label": (image[:, :1] > 0).long() + (image[:, 1:] > 1).long()}
    losses = []
    for step in range(40):
        with pytest.warns(UserWarning, match="not registered"):  # self.log needs a Trainer
            loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_class_names_must_match_classes() -> None:
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        small_module(class_names=["a", "b", "c"])
