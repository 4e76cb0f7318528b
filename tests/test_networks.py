import pytest
import torch

from networks import build_network, list_networks
from networks.unet3d import UNet3D

# name -> (small constructor arguments, an input size the network takes)
SMALL = {
    "unet3d": ({"base_features": 4}, (16, 24, 32)),
    "vnet": ({}, (16, 16, 32)),
    "vnet_light": ({}, (8, 16, 24)),
    "segresnet": ({"init_filters": 8}, (8, 16, 24)),
}


def test_every_registered_network_is_tested() -> None:
    assert sorted(SMALL) == list_networks()


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shape_and_finite_gradients(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    kwargs, size = SMALL[name]
    net = build_network(name, in_channels=in_channels, num_classes=4, **kwargs)
    x = torch.randn(2, in_channels, *size)
    out = net(x)
    assert out.shape == (2, 4, *size)
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


@pytest.mark.parametrize(("name", "divisor"), [("unet3d", 8), ("vnet", 16), ("vnet_light", 8), ("segresnet", 8)])
def test_networks_reject_sizes_they_cannot_take(name: str, divisor: int) -> None:
    net = build_network(name, in_channels=2, num_classes=4, **SMALL[name][0])
    with pytest.raises(ValueError, match=f"divisible by {divisor}"):
        net(torch.zeros(1, 2, 16, 16, divisor + 4))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, 16, 16, 16))


def test_vnet_parameter_counts() -> None:
    # V-Net as in the paper and the thesis' Table 1 (~45 M); the light V-Net drops the deepest
    # stage, as the thesis' released code did (12.25 M; Table 1 says ~25 M, see the README).
    vnet = build_network("vnet", in_channels=1, num_classes=4)
    light = build_network("vnet_light", in_channels=1, num_classes=4)
    assert sum(p.numel() for p in vnet.parameters()) == pytest.approx(45.61e6, rel=0.005)
    assert sum(p.numel() for p in light.parameters()) == pytest.approx(12.25e6, rel=0.005)
    assert all(c.kernel_size == (5, 5, 5) for c in vnet.modules()
               if isinstance(c, torch.nn.Conv3d) and c.stride == (1, 1, 1) and c.kernel_size != (1, 1, 1))


def test_registry_names_networks_and_rejects_unknown_names() -> None:
    assert "unet3d" in list_networks()
    with pytest.raises(ValueError, match="unknown network 'nope'.*unet3d"):
        build_network("nope")
