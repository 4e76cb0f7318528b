import pytest
import torch

from networks import build_network, list_networks
from networks.unet3d import UNet3D


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_unet3d_output_shape_and_finite_gradients(in_channels: int) -> None:
    torch.manual_seed(0)
    net = build_network("unet3d", in_channels=in_channels, num_classes=4, base_features=4)
    x = torch.randn(2, in_channels, 16, 24, 32)
    out = net(x)
    assert out.shape == (2, 4, 16, 24, 32)
    out.square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_unet3d_follows_the_paper_channel_plan() -> None:
    net = UNet3D(in_channels=3, num_classes=3, base_features=32)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    # Channels double before each pooling: 32->64, 64->128, 128->256, 256->512 (Cicek et al.).
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
    assert [u.out_channels for u in net.upsamplers] == [512, 256, 128]
    assert net.head.kernel_size == (1, 1, 1) and net.head.out_channels == 3
    # 19.07 M parameters at the paper's width (3 input channels, 3 classes).
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(19.07e6, rel=0.01)


def test_unet3d_rejects_sizes_it_cannot_take() -> None:
    net = build_network("unet3d", in_channels=2, num_classes=4, base_features=2)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, 2, 16, 16, 20))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, 16, 16, 16))


def test_registry_names_networks_and_rejects_unknown_names() -> None:
    assert "unet3d" in list_networks()
    with pytest.raises(ValueError, match="unknown network 'nope'.*unet3d"):
        build_network("nope")
