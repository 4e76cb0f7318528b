import pytest
import torch
from torch import nn

from networks.densevoxelnet import DenseVoxelNet
from networks.outputs import TrainingOutput

SMALL = {"init_features": 4, "growth_rate": 4, "layers_per_block": 2, "deconv_channels": (8, 4)}
SIZE = (16, 16, 24)


def test_paper_settings_parameter_count_and_layout() -> None:
    net = DenseVoxelNet(in_channels=1, num_classes=4)
    # 1,784,632 parameters; the paper says "about 1.8 M" (0.9 % fewer).
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1_784_632, rel=0.005)
    assert (net.stem.kernel_size, net.stem.stride, net.stem.out_channels) == ((3, 3, 3), (2, 2, 2), 16)
    dense_convs = [m for b in (net.block1, net.block2) for m in b.modules() if isinstance(m, nn.Conv3d)]
    assert len(dense_convs) == 24 and all(c.out_channels == 12 and c.kernel_size == (3, 3, 3) for c in dense_convs)
    assert (net.block1.out_channels, net.block2.out_channels) == (160, 304)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.2 for m in net.modules()) == 24
    assert any(isinstance(m, nn.MaxPool3d) for m in net.transition)
    deconvs = [m for m in net.upsample if isinstance(m, nn.ConvTranspose3d)]
    assert [(d.in_channels, d.out_channels, d.stride) for d in deconvs] == [(304, 128, (2, 2, 2)), (128, 64, (2, 2, 2))]


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_eval_output_shape(in_channels: int) -> None:
    torch.manual_seed(0)
    net = DenseVoxelNet(in_channels=in_channels, num_classes=3, **SMALL).eval()
    with torch.no_grad():
        out = net(torch.randn(1, in_channels, *SIZE))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 3, *SIZE)
    assert torch.isfinite(out).all()


def test_training_returns_auxiliary_logits_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = DenseVoxelNet(in_channels=2, num_classes=4, **SMALL).train()
    out = net(torch.randn(2, 2, *SIZE))
    assert isinstance(out, TrainingOutput)
    assert out.logits.shape == (2, 4, *SIZE)
    assert len(out.deep_supervision) == 1 and out.deep_supervision[0].shape == out.logits.shape
    assert out.regularisers == {}
    (out.logits.square().mean() + out.deep_supervision[0].square().mean()).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert net.side_head.weight.grad.abs().sum() > 0
    assert net.head.weight.grad.abs().sum() > 0


def test_rejects_bad_inputs_and_arguments() -> None:
    net = DenseVoxelNet(in_channels=2, num_classes=4, **SMALL)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 2, 16, 16, 18))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="in_channels >= 1"):
        DenseVoxelNet(in_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        DenseVoxelNet(dropout=1.0)
