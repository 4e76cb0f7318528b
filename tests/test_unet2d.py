import re

import pytest
import torch

from networks.unet2d import UNet2D

# slice_axis -> a small (D, H, W) whose in-plane sizes are divisible by 16 and whose slice axis is not
SIZES = {0: (3, 16, 32), 1: (16, 5, 32), 2: (32, 16, 3)}


def test_parameter_count_and_channel_plan_at_the_papers_width() -> None:
    with torch.device("meta"):  # no real weights needed to count them
        net = UNet2D(in_channels=1, num_classes=4)
    # 31.04 M: Ronneberger et al.'s U-Net has ~31.03 M (conv biases, no batch norm); here the
    # convolutions are bias-free and each has batch norm (2 parameters per channel instead of 1).
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(31_036_676, rel=0.005)
    convs = [(c.in_channels, c.out_channels) for c in net.unet.encoder.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs == [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512),
                     (512, 1024), (1024, 1024)]
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in net.unet.upsamplers] == [
        (1024, 512, (2, 2), (2, 2)), (512, 256, (2, 2), (2, 2)), (256, 128, (2, 2), (2, 2)), (128, 64, (2, 2), (2, 2))]
    assert [level[0][0].in_channels for level in net.unet.decoder] == [1024, 512, 256, 128]  # skip concatenated
    assert (net.unet.head.kernel_size, net.unet.head.out_channels) == ((1, 1), 4)
    assert net.slice_axis == 2 and net.size_divisor == 16


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_output_shape_in_train_and_eval_mode(in_channels: int, slice_axis: int) -> None:
    torch.manual_seed(0)
    size = SIZES[slice_axis]
    net = UNet2D(in_channels=in_channels, num_classes=4, base_features=4, slice_axis=slice_axis)
    x = torch.randn(2, in_channels, *size)
    assert net(x).shape == (2, 4, *size)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, *size)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_segments_slice_by_slice(slice_axis: int) -> None:
    torch.manual_seed(0)
    net = UNet2D(in_channels=2, num_classes=3, base_features=4, slice_axis=slice_axis).eval()
    x = torch.randn(2, 2, *SIZES[slice_axis])
    axis = 2 + slice_axis
    changed = x.clone()
    changed.select(axis, 1).add_(torch.randn_like(changed.select(axis, 1)))
    with torch.no_grad():
        out, out_changed = net(x), net(changed)
        # Each output slice is the 2D U-Net applied to that input slice alone.
        torch.testing.assert_close(out.select(axis, 2), net.unet(x.select(axis, 2)))
    difference = (out - out_changed).abs().amax(dim=[d for d in range(5) if d != axis])
    assert difference[1] > 1e-3
    assert difference[0] == 0 and difference[2] == 0


def test_backward_gives_finite_gradients_for_every_parameter() -> None:
    torch.manual_seed(0)
    net = UNet2D(in_channels=2, num_classes=4, base_features=4)
    net(torch.randn(2, 2, *SIZES[2])).square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize(("slice_axis", "bad", "planes"), [
    (0, (3, 16, 20), "H, W"), (1, (8, 5, 32), "D, W"), (2, (16, 24, 3), "D, H")])
def test_rejects_in_plane_sizes_not_divisible_by_16(slice_axis: int, bad: tuple, planes: str) -> None:
    net = UNet2D(in_channels=2, num_classes=4, base_features=4, slice_axis=slice_axis)
    with pytest.raises(ValueError, match=re.escape(f"in-plane sizes ({planes}) divisible by 16, got {bad}")):
        net(torch.zeros(1, 2, *bad))


def test_rejects_wrong_channel_counts_and_dimensions() -> None:
    net = UNet2D(in_channels=2, num_classes=4, base_features=4)
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\), got \(1, 3, 32, 16, 3\)"):
        net(torch.zeros(1, 3, *SIZES[2]))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 2, 16, 16))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"slice_axis": 3}, "slice_axis must be 0, 1 or 2"),
    ({"slice_axis": -1}, "slice_axis must be 0, 1 or 2"),
    ({"in_channels": 0}, "in_channels >= 1"),
    ({"num_classes": 0}, "num_classes >= 1"),
    ({"base_features": 0}, "base_features >= 1"),
])
def test_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet2D(**kwargs)
