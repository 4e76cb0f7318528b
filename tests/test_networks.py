import pytest
import torch

from networks import build_network, channels_last_default, list_networks
from networks.checks import input_size_problem
from networks.outputs import as_training_output, network_border
from networks.unet3d import UNet3D

from network_cases import MULTI_STREAM, SETTINGS, SMALL


def channel_cases() -> list[tuple[str, int]]:
    return [(name, c) for name in sorted(SMALL) for c in (1, 2, 3, 4) if not (name in MULTI_STREAM and c == 1)]


def output_size(name: str, net: torch.nn.Module) -> tuple[int, ...]:
    b = network_border(net)
    return tuple(s - 2 * b for s in SMALL[name][1])


def test_every_registered_network_is_tested() -> None:
    """Every network declares its test settings where it registers, so every network is tested."""
    assert sorted(SMALL) == list_networks()


@pytest.mark.parametrize(("name", "in_channels"), channel_cases())
def test_output_shape_and_finite_gradients(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    kwargs, size = SMALL[name]
    net = build_network(name, in_channels=in_channels, num_classes=4, **kwargs)
    x = torch.randn(SETTINGS[name].batch_size, in_channels, *size)
    out = as_training_output(net(x))
    assert out.logits.shape == (x.shape[0], 4, *output_size(name, net))
    # Every output is trained: main logits, deep-supervision heads and regularisers.
    loss = out.logits.square().mean() + sum(h.square().mean() for h in out.deep_supervision)
    (loss + sum(out.regularisers.values())).backward()
    for parameter_name, parameter in net.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


CHANNELS_LAST = {"unet3d", "vnet", "vnet_light", "densevoxelnet", "attention_unet"}  # measured faster


@pytest.mark.parametrize("name", sorted(CHANNELS_LAST | {"segresnet", "dynunet"}))
def test_the_channels_last_layout_changes_speed_not_results(name: str) -> None:
    """The registered default (measured per family, see ``build_network``) and either layout
    give the same logits from the same weights."""
    assert channels_last_default(name) is (name in CHANNELS_LAST)
    kwargs, size = SMALL[name]
    torch.manual_seed(0)
    plain = build_network(name, in_channels=2, num_classes=4, channels_last=False, **kwargs).eval()
    torch.manual_seed(0)
    last = build_network(name, in_channels=2, num_classes=4, channels_last=True, **kwargs).eval()
    convolutions = [p for p in last.parameters() if p.dim() == 5]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in convolutions)
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        torch.testing.assert_close(last(x), plain(x), rtol=1e-4, atol=1e-5)
    assert last.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.parametrize("num_classes", [3, 1])  # 1: a single sigmoid region (e.g. lesion only)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_eval_mode_returns_plain_logits(name: str, num_classes: int) -> None:
    kwargs, size = SMALL[name]
    net = build_network(name, in_channels=2, num_classes=num_classes, **kwargs).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, num_classes, *output_size(name, net))


@pytest.mark.parametrize("name", sorted(MULTI_STREAM))
def test_multi_stream_networks_need_two_modalities(name: str) -> None:
    with pytest.raises(ValueError, match="one stream per modality"):
        build_network(name, in_channels=1, num_classes=4)


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


@pytest.mark.parametrize(("name", "divisor"), sorted((n, s.size_divisor) for n, s in SETTINGS.items()
                                                     if s.size_divisor > 1))
def test_networks_reject_sizes_they_cannot_take(name: str, divisor: int) -> None:
    net = build_network(name, in_channels=2, num_classes=4, **SMALL[name][0])
    with pytest.raises(ValueError, match=f"divisible by {divisor}"):
        net(torch.zeros(1, 2, 16, 16, divisor + 2))
    with pytest.raises(ValueError, match=r"\(batch, 2, D, H, W\)"):
        net(torch.zeros(1, 3, 16, 16, 16))


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_size_is_judged_without_running_or_changing_the_network(name: str) -> None:
    """``input_size_problem`` (train.py's check before any step): the network's own message for a
    size it refuses, None for one it takes; its weights and buffers untouched (the probe runs on
    a meta copy)."""
    settings = SETTINGS[name]
    net = build_network(name, in_channels=max(2, settings.min_in_channels), num_classes=4, **SMALL[name][0]).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    channels = max(2, settings.min_in_channels)
    for training in (True, False):
        assert input_size_problem(net, channels, settings.input_size, training=training) is None
        if settings.size_divisor > 1:
            bad = (*settings.input_size[:2], settings.input_size[2] + 1)
            assert f"divisible by {settings.size_divisor}" in input_size_problem(net, channels, bad, training=training)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and net.training


@pytest.mark.parametrize("name", ["densenet3d", "hyperdensenet"])
def test_unpadded_networks_reject_inputs_smaller_than_their_border(name: str) -> None:
    net = build_network(name, in_channels=2, num_classes=4)
    assert network_border(net) == 9  # nine unpadded 3x3x3 convolutions
    with pytest.raises(ValueError, match="at least 19"):
        net(torch.zeros(1, 2, 18, 30, 30))


def test_resnet3d_vae_rejects_training_patches_its_vae_was_not_built_for() -> None:
    net = build_network("resnet3d_vae", in_channels=1, num_classes=2, init_filters=8, input_image_size=(16, 16, 16))
    with pytest.raises(ValueError, match="input_image_size"):
        net(torch.zeros(1, 1, 16, 16, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        build_network("resnet3d_vae", input_image_size=(16, 16, 24))
    assert net.eval()(torch.zeros(1, 1, 16, 16, 32)).shape == (1, 2, 16, 16, 32)  # inference takes any size


def test_swinunetr_needs_more_than_one_voxel_at_its_deepest_level_not_64_on_every_side() -> None:
    """Its deepest features (1/32 of the input) are instance-normalised: 32³ leaves one voxel
    there, refused in training and at inference alike (the meta probe that train.py runs says so
    too); 64x32x32 leaves two and is taken."""
    net = build_network("swinunetr", in_channels=1, num_classes=2, **SMALL["swinunetr"][0])
    for training in (True, False):
        assert "one voxel for (32, 32, 32)" in input_size_problem(net, 1, (32, 32, 32), training=training)
        assert input_size_problem(net, 1, (32, 64, 32), training=training) is None
    with pytest.raises(ValueError, match="make at least one side 64 or more"):
        net.eval()(torch.zeros(1, 1, 32, 32, 32))
    assert net.eval()(torch.zeros(1, 1, 32, 32, 64)).shape == (1, 2, 32, 32, 64)


def test_vnet_parameter_counts() -> None:
    # V-Net as in the paper and the thesis' Table 1 (~45 M); the light V-Net drops the deepest
    # stage, as the thesis' released code did (12.25 M; Table 1 says ~25 M, see the README).
    vnet = build_network("vnet", in_channels=1, num_classes=4)
    light = build_network("vnet_light", in_channels=1, num_classes=4)
    assert sum(p.numel() for p in vnet.parameters()) == pytest.approx(45.61e6, rel=0.005)
    assert sum(p.numel() for p in light.parameters()) == pytest.approx(12.25e6, rel=0.005)
    assert all(c.kernel_size == (5, 5, 5) for c in vnet.modules()
               if isinstance(c, torch.nn.Conv3d) and c.stride == (1, 1, 1) and c.kernel_size != (1, 1, 1))
    # Half the maps at every stage: a quarter of the weights (45.61 M / 4 = 11.40 M, plus the per-map terms).
    half = build_network("vnet", in_channels=1, num_classes=4, base_channels=8)
    assert sum(p.numel() for p in half.parameters()) == 11_409_932
    assert [m.out_channels for m in half.modules() if isinstance(m, torch.nn.Conv3d) and m.stride == (2, 2, 2)] == [
        16, 32, 64, 128]
    with pytest.raises(ValueError, match="base_channels >= 1"):
        build_network("vnet", base_channels=0)


def test_highresnet_is_monais_at_base_16_and_scales_every_width() -> None:
    from monai.networks.nets import HighResNet as MonaiHighResNet

    ours = build_network("highresnet", in_channels=2, num_classes=4)
    monai = MonaiHighResNet(spatial_dims=3, in_channels=2, out_channels=4)
    assert list(ours.state_dict()) == list(monai.state_dict())  # checkpoints of the default load either way
    assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in monai.state_dict().values()]
    assert sum(p.numel() for p in ours.parameters()) == 809_544
    quarter = build_network("highresnet", in_channels=2, num_classes=4, base_features=4)
    widths = [m.out_channels for m in quarter.modules() if isinstance(m, torch.nn.Conv3d)]
    assert widths[0] == 4 and sorted(set(widths)) == [4, 8, 16, 20] and widths[-1] == 4  # 16, 32, 64, 80 / 4; 4 classes
    with pytest.raises(ValueError, match="base_features >= 1"):
        build_network("highresnet", base_features=0)


@pytest.mark.parametrize(("name", "in_channels", "ours", "thesis"), [
    ("densenet3d", 1, 2.686e6, 2.7e6),
    ("densenet3d_late_fusion", 2, 5.372e6, 5.2e6),
    ("densenet3d_early_fusion", 2, 2.996e6, 2.9e6),
    ("densenet3d_early_fusion", 3, 3.306e6, 3.4e6),
])
def test_densenet_parameter_counts_match_the_thesis(name: str, in_channels: int, ours: float, thesis: float) -> None:
    # Table 1 of the thesis, 4 classes (iSeg: background, CSF, GM, WM); within 15 % as required.
    net = build_network(name, in_channels=in_channels, num_classes=4)
    count = sum(p.numel() for p in net.parameters())
    assert count == pytest.approx(ours, rel=0.001)
    assert count == pytest.approx(thesis, rel=0.15)


def test_hyperdensenet_links_every_layer_to_all_earlier_layers_of_all_paths() -> None:
    net = build_network("hyperdensenet", in_channels=2, num_classes=4)
    first_convs = [layer[0][2] for layer in net.layers]  # path 0's BN-ReLU-Conv, its convolution
    # Layer l sees both paths' maps of layers 1..l-1: 2 x (25, 50, 75, 125, ...).
    assert [c.in_channels for c in first_convs] == [1, 50, 100, 150, 250, 350, 450, 600, 750]
    assert net.fully_connected[0].in_channels == 2 * 450


def test_registry_names_networks_and_rejects_unknown_names() -> None:
    assert "unet3d" in list_networks()
    with pytest.raises(ValueError, match="unknown network 'nope'.*unet3d"):
        build_network("nope")


def test_network_options_are_listed_and_unknown_ones_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from networks.__main__ import main

    assert main(["unet3d", "densenet3d"]) == 0
    out = capsys.readouterr().out
    assert "unet3d: " in out and "base_features: int = 32" in out
    assert "kernels: Sequence[int] = (25, 25, 25, 50, 50, 50, 75, 75, 75)" in out
    with pytest.raises(ValueError, match=r"network 'unet3d' has no option 'base_feature'; its options: base_features"):
        build_network("unet3d", in_channels=2, num_classes=4, base_feature=8)
    assert main(["nonet"]) == 2 and "unknown network 'nonet'" in capsys.readouterr().err


def test_dynunet_heads_stay_at_their_resolution_and_their_loss_uses_downsampled_targets() -> None:
    """nnU-Net's deep supervision: the head below the top is half the patch size, the target is
    resized to it (nearest), not the head upsampled to the target; eval mode gives the logits only."""
    from monai.losses import DeepSupervisionLoss

    from lightning_modules.losses import build_loss
    from networks import build_network

    torch.manual_seed(0)
    net = build_network("dynunet", in_channels=2, num_classes=3, levels=4, filters=[4, 8, 16, 32], deep_supr_num=2)
    out = net.train()(torch.randn(1, 2, 16, 16, 32))
    assert out.logits.shape == (1, 3, 16, 16, 32)
    assert [tuple(h.shape) for h in out.deep_supervision] == [(1, 3, 8, 8, 16), (1, 3, 4, 4, 8)]
    target = torch.randint(0, 3, (1, 1, 16, 16, 32))
    loss_fn = build_loss("dice_ce")
    loss = DeepSupervisionLoss(loss_fn, weight_mode="exp")([out.logits, *out.deep_supervision], target.float())
    # Weights 1, 1/2, 1/4 (MONAI's "exp"); "nearest-exact" takes voxel 2i+1 of 2, 4i+2 of 4.
    by_hand = (loss_fn(out.logits, target) + 0.5 * loss_fn(out.deep_supervision[0], target[..., 1::2, 1::2, 1::2])
               + 0.25 * loss_fn(out.deep_supervision[1], target[..., 2::4, 2::4, 2::4]))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert net.eval()(torch.randn(1, 2, 16, 16, 32)).shape == (1, 3, 16, 16, 32)


def test_unet3d_deep_supervision_heads_are_optional_and_trainable() -> None:
    from networks import build_network

    torch.manual_seed(0)
    plain = build_network("unet3d", in_channels=2, num_classes=3, base_features=2)
    supervised = build_network("unet3d", in_channels=2, num_classes=3, base_features=2, deep_supervision=2)
    assert set(plain.state_dict()) < set(supervised.state_dict())  # without heads: the old checkpoints' keys
    out = supervised.train()(torch.randn(1, 2, 16, 16, 24))
    assert out.logits.shape == (1, 3, 16, 16, 24)
    assert [tuple(h.shape) for h in out.deep_supervision] == [(1, 3, 8, 8, 12), (1, 3, 4, 4, 6)]
    sum(t.square().mean() for t in (out.logits, *out.deep_supervision)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in supervised.parameters())
    assert supervised.eval()(torch.randn(1, 2, 16, 16, 24)).shape == (1, 3, 16, 16, 24)
    assert plain.train()(torch.randn(1, 2, 16, 16, 24)).shape == (1, 3, 16, 16, 24)  # no heads: plain logits
    with pytest.raises(ValueError, match="2 decoder levels below the top"):
        build_network("unet3d", deep_supervision=3)
