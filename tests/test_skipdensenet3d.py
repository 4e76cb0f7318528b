import pytest
import torch
from torch import nn

from networks.skipdensenet3d import SkipDenseNet3D

SMALL = {"init_features": 8, "growth_rate": 4, "layers_per_block": 2}
SIZE = (16, 16, 32)


def test_paper_settings_parameter_count_and_layout() -> None:
    net = SkipDenseNet3D(in_channels=1, num_classes=4)
    # 1,551,228 parameters. No figure from the paper is checked here; the authors' released code
    # (3D-SkipDenseSeg) gives 1,551,392 with 1 input channel: the same layers plus a bias on
    # each transition's strided convolution (164 more).
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1_551_228, rel=0.005)
    assert [b.out_channels for b in net.blocks] == [96, 112, 120, 124]
    layers = [m for b in net.blocks for m in b.modules() if isinstance(m, nn.Conv3d)]
    assert len(layers) == 32  # 4 blocks x 4 layers x (1x1x1 bottleneck + 3x3x3)
    assert {c.out_channels for c in layers if c.kernel_size == (1, 1, 1)} == {64}
    assert {c.out_channels for c in layers if c.kernel_size == (3, 3, 3)} == {16}
    assert [u.stride for u in net.upsamplers] == [(2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 16)]
    assert net.head[-1].in_channels == 4 * 4 + 32 and net.head[-1].kernel_size == (1, 1, 1)
    assert net.size_divisor == 16


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_eval_output_shape(in_channels: int) -> None:
    torch.manual_seed(0)
    net = SkipDenseNet3D(in_channels=in_channels, num_classes=3, **SMALL).eval()
    with torch.no_grad():
        out = net(torch.randn(1, in_channels, *SIZE))
    assert out.shape == (1, 3, *SIZE)
    assert torch.isfinite(out).all()


def test_training_output_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = SkipDenseNet3D(in_channels=2, num_classes=4, **SMALL).train()
    out = net(torch.randn(2, 2, *SIZE))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, *SIZE)
    out.square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert all(u.weight.grad.abs().sum() > 0 for u in net.upsamplers)


def test_rejects_bad_inputs_and_arguments() -> None:
    net = SkipDenseNet3D(in_channels=2, num_classes=4, **SMALL)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 2, 16, 16, 24))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="num_classes >= 1"):
        SkipDenseNet3D(num_classes=0)
    with pytest.raises(ValueError, match="not divisible by upsample_channels=4"):
        SkipDenseNet3D(init_features=32, growth_rate=12)  # block widths 80, 88, 92, 94
