import pytest
import torch
import torch.nn.functional as F

from networks.med3d import Med3D

SMALL = {"depth": 10, "base_features": 8}
SIZE = (8, 16, 24)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _on_meta(**kwargs: object) -> Med3D:
    # Parameter counts need no real weights: building on the meta device skips 15-65 M initialisations.
    with torch.device("meta"):
        return Med3D(**kwargs)


@pytest.mark.parametrize(("depth", "params", "medicalnet_encoder"), [
    (10, 14_514_528, 14.36e6), (18, 33_145_184, 32.99e6), (34, 63_454_816, 63.31e6), (50, 46_707_296, 46.21e6)])
def test_parameter_counts_per_depth(depth: int, params: int, medicalnet_encoder: float) -> None:
    net = _on_meta(in_channels=1, num_classes=4, depth=depth)
    assert _count(net) == pytest.approx(params, rel=0.005)
    # MedicalNet's README table (14.36 / 32.99 / 63.31 / 46.21 M) counts the encoder's state dict
    # (parameters and batch-norm buffers, no head) with its shortcuts: B for 10/50, A for 18/34.
    encoder = sum(t.numel() for k, t in net.state_dict().items() if not k.startswith("conv_seg"))
    assert encoder == pytest.approx(medicalnet_encoder, rel=0.0005)
    assert net.shortcut == ("B" if depth in (10, 50) else "A")


def test_shortcut_b_adds_projections_that_a_does_not_have() -> None:
    a = _on_meta(depth=18, shortcut="A")
    b = _on_meta(depth=18, shortcut="B")
    # Three 1x1x1 projections + batch norm: 64->128, 128->256, 256->512.
    assert _count(b) - _count(a) == (64 * 128 + 128 * 256 + 256 * 512) + 2 * (128 + 256 + 512)


def test_encoder_strides_dilations_and_head_follow_medicalnet() -> None:
    net = Med3D(in_channels=3, num_classes=5, depth=50, base_features=8)
    assert (net.conv1.in_channels, net.conv1.kernel_size, net.conv1.stride) == (3, (7, 7, 7), (2, 2, 2))
    assert (net.maxpool.kernel_size, net.maxpool.stride) == (3, 2)
    first = [net.layer1[0], net.layer2[0], net.layer3[0], net.layer4[0]]
    assert [b.conv2.stride[0] for b in first] == [1, 2, 1, 1]
    assert [b.conv2.dilation[0] for b in first] == [1, 1, 2, 4]
    assert [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 6, 3]
    transposed, _, _, conv, _, _, classifier = net.conv_seg
    assert (transposed.in_channels, transposed.out_channels, transposed.stride) == (8 * 8 * 4, 4, (2, 2, 2))
    assert conv.kernel_size == (3, 3, 3)
    assert (classifier.kernel_size, classifier.out_channels, classifier.bias) == ((1, 1, 1), 5, None)


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_output_shape_in_train_and_eval_mode(in_channels: int) -> None:
    torch.manual_seed(0)
    net = Med3D(in_channels=in_channels, num_classes=4, **SMALL)
    x = torch.randn(2, in_channels, *SIZE)
    assert net(x).shape == (2, 4, *SIZE)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, *SIZE)


def test_output_is_the_heads_quarter_size_logits_upsampled_trilinearly() -> None:
    torch.manual_seed(0)
    net = Med3D(in_channels=2, num_classes=3, **SMALL).eval()
    x = torch.randn(1, 2, *SIZE)
    with torch.no_grad():
        quarter = net.forward_quarter(x)
        out = net(x)
    assert quarter.shape == (1, 3, 2, 4, 6)
    expected = F.interpolate(quarter, scale_factor=4, mode="trilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("depth", [18, 50])
def test_backward_gives_finite_gradients_for_every_parameter(depth: int) -> None:
    torch.manual_seed(0)
    net = Med3D(in_channels=2, num_classes=4, depth=depth, base_features=4)
    x = torch.randn(2, 2, *SIZE, requires_grad=True)
    net(x).square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in net.parameters())
    # Gradients also reach the input (through the type A zero-pad shortcuts at depth 18).
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rejects_wrong_sizes_and_channel_counts() -> None:
    net = Med3D(in_channels=2, num_classes=4, **SMALL)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, 2, 8, 16, 12))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, *SIZE))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(2, *SIZE))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"depth": 101}, r"depth must be one of \[10, 18, 34, 50\], got 101"),
    ({"depth": 0}, "depth must be one of"),
    ({"in_channels": 0}, "in_channels >= 1"),
    ({"num_classes": 0}, "num_classes >= 1"),
    ({"shortcut": "C"}, "shortcut must be"),
])
def test_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Med3D(**kwargs)
