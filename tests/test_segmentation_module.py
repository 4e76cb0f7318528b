import warnings
from functools import partial
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.utils import one_hot

from core.io import DataWarning
from core.labels import LabelSpace
from core.metrics import dice_per_structure
from lightning_modules import SegmentationModule
from lightning_modules.callbacks import SegmentationWriter, format_dice_table
from lightning_modules.losses import build_loss
from networks.outputs import TrainingOutput

from network_cases import SETTINGS, SMALL

STEPS = {"vnet": 20, "swinunetr": 20}  # the slowest networks get fewer overfitting steps than 40
# V-Net barely moves with Adam in tens of steps; with SGD and momentum (its paper's optimiser) it does.
OPTIMIZER = {"vnet": partial(torch.optim.SGD, lr=0.1, momentum=0.9)}


LABEL_ARGS = ("num_classes", "class_names", "label_values", "regions", "region_names")


def small_module(**kwargs) -> SegmentationModule:
    """A small module; label arguments in the separate form of older checkpoints are folded
    into its label space (``LabelSpace.from_legacy``), as checkpoints of that form are."""
    args = {"in_channels": 2, "num_classes": 4, "class_names": ["background", "CSF", "GM", "WM"],
            "network_kwargs": {"base_features": 2}, "roi_size": (8, 8, 8), "sw_batch_size": 2}
    args.update(kwargs)
    labels = LabelSpace.from_legacy(**{k: args.pop(k) for k in LABEL_ARGS if k in args})
    return SegmentationModule(label_space=labels.to_dict(), **args)


def test_dice_is_hard_label_per_region_without_background() -> None:
    module = small_module()
    label = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    label[:, 0, 0, :2] = 1          # 8 CSF voxels
    label[:, 0, 1] = 2              # 16 GM voxels; no WM at all
    prediction = label.clone()
    prediction[:, 0, 0, 0] = 0      # 4 CSF voxels missed
    prediction[:, 0, 2, 0] = 2      # 4 background voxels called GM
    prediction[1, 0, 3, 3, 3] = 3   # second item: one spurious WM voxel
    masks = module.labels.structure_masks  # one mask per foreground class: background is not scored
    scores = dice_per_structure(masks(prediction), masks(label))
    # CSF: 2*4 / (4 + 8) = 2/3; GM: 2*16 / (20 + 16) = 8/9; WM absent from truth: 1 where also
    # absent from the prediction (core.metrics' convention, as in every table), 0 where predicted.
    assert scores.shape == (2, 3)
    torch.testing.assert_close(scores, torch.tensor([[2 / 3, 8 / 9, 1.0], [2 / 3, 8 / 9, 0.0]], dtype=torch.float64))


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


def test_whole_volumes_are_evaluated_in_float32_whatever_autocast_surrounds_them() -> None:
    """A Trainer's ``bf16-mixed`` (the CPU's default where bf16 is native) wraps validation and
    test in bfloat16 autocast; whole volumes are still run in float32, as ``predict.py`` runs
    them, unless ``inference_precision="bf16"`` asks for bfloat16."""
    module = small_module().eval()
    volume = torch.randn(1, 2, 13, 10, 19)
    seen: list[torch.dtype] = []
    module.network.register_forward_hook(lambda net, args, out: seen.append(out.dtype))
    with torch.no_grad():
        plain = module.predict_logits(volume)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = module.predict_logits(volume)
        assert set(seen) == {torch.float32} and torch.equal(plain, under_autocast)
        assert module.segmenter.settings()["precision"] == "32"
        seen.clear()
        module.inference_precision = "bf16"
        half = module.predict_logits(volume)
    assert set(seen) == {torch.bfloat16} and module.segmenter.settings()["precision"] == "bf16"
    assert not torch.equal(half.float(), plain) and float((half.float() - plain).abs().max()) < 0.1
    assert "inference_precision" not in module.hparams  # an inference choice, as flips
    with pytest.raises(ValueError, match="inference_precision must be one of 32, bf16, got '16'"):
        small_module(inference_precision="16")


def test_evaluating_in_a_precision_the_cpu_only_emulates_is_said_when_the_run_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from core import inference
    from lightning_modules.trainer import Trainer

    module = small_module(inference_precision="bf16")
    module.trainer = Trainer(accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False)
    monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True})
    with pytest.warns(DataWarning, match=r"^model\.inference_precision bf16: bfloat16 is emulated on this CPU \(no "
                                         r"AVX512-BF16 or AMX\), many times slower than float32; evaluate in float32: "
                                         r"--model\.inference_precision 32$"):
        module.setup("validate")
    float32 = small_module()
    float32.trainer = module.trainer
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        float32.setup("validate")  # float32: nothing to say
        monkeypatch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": True})
        module.setup("validate")  # native bf16: nothing to say


def test_sliding_window_covers_volumes_of_any_size() -> None:
    module = small_module().eval()
    with torch.no_grad():
        logits = module.predict_logits(torch.randn(1, 2, 13, 10, 19))
    assert logits.shape == (1, 4, 13, 10, 19)


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    module = small_module(network_kwargs={"base_features": 4}, optimizer=partial(torch.optim.AdamW, lr=0.01),
                          lr_scheduler=None)
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


class TwoHeadsAndARegulariser(torch.nn.Module):
    """A stand-in network with a main output, a half-size deep-supervision head and a regulariser."""

    def __init__(self, main: torch.Tensor, head: torch.Tensor) -> None:
        super().__init__()
        self.main, self.head = torch.nn.Parameter(main), torch.nn.Parameter(head)

    def forward(self, image: torch.Tensor) -> TrainingOutput:
        return TrainingOutput(self.main, deep_supervision=[self.head], regularisers={"vae": torch.tensor(0.25)})


def test_training_loss_adds_deep_supervision_and_regularisers() -> None:
    torch.manual_seed(0)
    module = small_module(loss="ce")
    main, head = torch.randn(1, 4, 8, 8, 8), torch.randn(1, 4, 4, 4, 4)
    module.network = TwoHeadsAndARegulariser(main, head)
    label = torch.randint(0, 4, (1, 1, 8, 8, 8))
    losses = module.training_losses(torch.zeros(1, 2, 8, 8, 8), label)
    # The head is scored against the label subsampled by nearest neighbour, with weight 1/2
    # (MONAI's "nearest-exact" takes the voxel nearest each half-size voxel's centre: the odd ones).
    expected_segmentation = (F.cross_entropy(main, label[:, 0])
                             + 0.5 * F.cross_entropy(head, label[:, 0, 1::2, 1::2, 1::2]))
    assert losses["segmentation"].item() == pytest.approx(expected_segmentation.item(), rel=1e-6)
    assert losses["vae"].item() == 0.25
    assert losses["loss"].item() == pytest.approx(expected_segmentation.item() + 0.25, rel=1e-5)


def test_an_output_that_does_not_line_up_with_the_target_is_an_error() -> None:
    module = small_module()
    module.network = torch.nn.Conv3d(2, 4, kernel_size=3)  # unpadded, but declares no border
    with pytest.raises(RuntimeError, match=r"returned spatial size \(6, 6, 6\).*should be \(8, 8, 8\)"):
        module.training_losses(torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8, dtype=torch.long))


def test_unpadded_network_trains_on_the_target_centre_and_predicts_every_voxel() -> None:
    torch.manual_seed(0)
    kwargs = {"kernels": [4, 4, 8], "fully_connected": [8], "dropout": 0.0}
    module = small_module(network="densenet3d", network_kwargs=kwargs, roi_size=(12, 12, 12), loss="ce")
    assert module.border == 3
    image, label = torch.randn(1, 2, 12, 12, 12), torch.randint(0, 4, (1, 1, 12, 12, 12))
    logits = module.network(image)
    loss = module.training_losses(image, label)["loss"]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, label[:, 0, 3:-3, 3:-3, 3:-3]).item(), rel=1e-5)
    # Valid convolutions are translation-equivariant, so stitched windows over the zero-padded
    # volume equal one pass over the whole padded volume: every voxel, exactly once in effect.
    module.eval()
    volume = torch.randn(1, 2, 23, 17, 30)
    with torch.no_grad():
        stitched = module.predict_logits(volume)
        whole = module.network(F.pad(volume, [3] * 6))
    assert stitched.shape == (1, 4, 23, 17, 30)
    torch.testing.assert_close(stitched, whole, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="every side must exceed 6"):
        small_module(network="densenet3d", network_kwargs=kwargs, roi_size=(6, 12, 12)).eval().predict_logits(volume)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_network_overfits_one_batch_through_the_module(name: str) -> None:
    """Some tens of steps on one fixed batch must lower the training loss substantially (to half
    its first value; the steps stop once it has)."""
    torch.manual_seed(0)
    kwargs, size = SMALL[name]
    optimizer = OPTIMIZER.get(name, partial(torch.optim.Adam, lr=1e-2))
    module = small_module(network=name, network_kwargs=kwargs, roi_size=size, optimizer=optimizer, lr_scheduler=None)
    optimizer = module.configure_optimizers()
    # Smooth blobs, so that low-resolution deep-supervision heads can fit them too; four classes.
    coarse = torch.randn(SETTINGS[name].batch_size, 2, *(max(2, s // 4) for s in size))
    image = F.interpolate(coarse, size=size, mode="trilinear")
    label = 2 * (image[:, :1] > 0).long() + (image[:, 1:] > 0).long()
    losses = []
    for _ in range(STEPS.get(name, 40)):
        loss = module.training_losses(image, label)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < 0.5 * losses[0]:
            break
    assert losses[-1] < 0.5 * losses[0], losses


# --- Ignored voxels and region-based (BraTS-style) training --------------------------------

BRATS_REGIONS = [[1, 2, 3], [1, 3], [3]]  # WT, TC, ET over classes 0 background, 1 NCR, 2 edema, 3 ET


def brats_module(**kwargs) -> SegmentationModule:
    args = {"class_names": ["background", "NCR_NET", "edema", "enhancing"], "label_values": [0, 1, 2, 4],
            "regions": BRATS_REGIONS, "region_names": ["WT", "TC", "ET"]}
    args.update(kwargs)
    return small_module(**args)


def evaluate(module: SegmentationModule, logits: torch.Tensor, label: torch.Tensor) -> tuple[dict, dict]:
    """``_evaluate_volume`` on given logits (as if from sliding windows), and what the epoch's
    end then logged."""
    logged = {}
    module.predict_logits = lambda image: logits
    module.log = lambda name, value, **kwargs: logged.update({name: float(value)})
    image = torch.zeros((1, int(module.hparams.in_channels), *label.shape[2:]))
    with warnings.catch_warnings():  # a row of voxels: a thin slab by construction, which the input check says
        warnings.filterwarnings("ignore", r".*along axis \d on the network's grid", DataWarning)
        output = module._evaluate_volume({"image": image, "label": label, "subject": ["s1"]}, "val")
    module._log_means("val")
    return output, logged


def row(values: list[int]) -> torch.Tensor:
    """A class map (1, 1, n, 1, 1): voxels in a row, so removing some is plain slicing."""
    return torch.tensor(values).view(1, 1, -1, 1, 1)


def test_ignored_voxels_count_in_no_dice_and_no_validation_loss() -> None:
    torch.manual_seed(0)
    label = row([0, 1, 1, 2, -1, 3, 3, -1, 2, 0])
    logits = torch.randn(1, 4, 10, 1, 1)
    logits[:, 1, [4, 7]] = 30.0  # ignored voxels predicted CSF: would cost CSF Dice if counted
    kept = (label != -1).view(-1)
    module = small_module()
    output, logged = evaluate(module, logits, label)
    removed_output, removed_logged = evaluate(small_module(), logits[:, :, kept], label[:, :, kept])
    torch.testing.assert_close(output["dice"], removed_output["dice"], equal_nan=True)
    assert logged["val/loss"] == pytest.approx(removed_logged["val/loss"], rel=1e-6)
    # Hand check on CSF: truth at voxels 1, 2; the prediction is CSF there (and at 4, 7, ignored).
    assert output["prediction"].shape == (1, 1, 10, 1, 1)
    prediction = output["prediction"].view(-1)
    truth_csf, predicted_csf = {1, 2}, {i for i in range(10) if kept[i] and prediction[i] == 1}
    assert output["dice"][0].item() == pytest.approx(2 * len(truth_csf & predicted_csf)
                                                     / (len(truth_csf) + len(predicted_csf)))


def test_region_module_builds_one_sigmoid_output_per_region() -> None:
    module = brats_module()
    assert module.labels.structure_names == ["WT", "TC", "ET"]
    assert module.hparams.label_space["regions"] == dict(zip(["WT", "TC", "ET"], BRATS_REGIONS, strict=True))
    assert module.labels.paint_classes == [2, 1, 3]
    assert module.eval()(torch.randn(1, 2, 8, 8, 8)).shape == (1, 3, 8, 8, 8)
    assert brats_module(region_names=None).labels.structure_names == ["region1", "region2", "region3"]
    assert small_module().labels.structure_names == ["CSF", "GM", "WM"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"regions": [[1, 2, 3], [1, 3]], "region_names": None}, "needs exactly one"),
    ({"regions": [[0, 1], [1]]}, "foreground classes"),
    ({"regions": [[1, 4]]}, "foreground classes"),
    ({"region_names": ["WT", "TC"]}, "2 region names for 3 regions"),
    ({"regions": None}, "without regions"),
])
def test_region_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        brats_module(**kwargs)


def test_region_dice_and_painted_prediction_by_hand() -> None:
    #          voxel:  0  1  2  3  4  5   6  7
    label = row([0, 2, 2, 1, 3, 3, -1, 0])
    predicted = torch.tensor([[0, 1, 1, 1, 1, 0, 1, 0],    # WT
                              [0, 0, 0, 0, 1, 1, 1, 1],    # TC
                              [0, 0, 0, 0, 0, 0, 1, 0]])   # ET
    logits = (predicted.float() * 10 - 5).view(1, 3, 8, 1, 1)
    output, logged = evaluate(brats_module(), logits, label)
    # Painted back: WT -> edema 2, then TC -> NCR 1, then ET -> enhancing 3 over them.
    assert output["prediction"].view(-1).tolist() == [0, 2, 2, 2, 1, 1, 3, 1]
    # Scored on that class map (what is written to disk and what evaluate.py reads); voxel 6 is
    # ignored. WT (classes 1-3): truth {1..5}, predicted {1..5, 7}: 2*5/(5+6). TC (1, 3): truth
    # {3, 4, 5}, predicted {4, 5, 7}: 2*2/(3+3). ET (3): truth {4, 5}, predicted nothing scored: 0.
    assert output["dice"].tolist() == pytest.approx([10 / 11, 2 / 3, 0.0])
    kept = (label != -1).view(-1)
    _, removed = evaluate(brats_module(), logits[:, :, kept], label[:, :, kept])
    assert logged["val/loss"] == pytest.approx(removed["val/loss"], rel=1e-6)


def test_region_training_with_deep_supervision_and_ignored_voxels() -> None:
    torch.manual_seed(0)
    module = brats_module(loss="ce")
    main, head = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)
    module.network = TwoHeadsAndARegulariser(main, head)
    label = torch.randint(-1, 4, (1, 1, 8, 8, 8))

    def masked_bce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        kept = (label != -1).expand(-1, 3, -1, -1, -1)
        target = torch.stack([torch.isin(label[:, 0], torch.tensor(r)) for r in BRATS_REGIONS], dim=1).float()
        return F.binary_cross_entropy_with_logits(logits[kept], target[kept])

    losses = module.training_losses(torch.zeros(1, 2, 8, 8, 8), label)
    expected = masked_bce(main, label) + 0.5 * masked_bce(head, label[..., 1::2, 1::2, 1::2])
    assert losses["segmentation"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_region_training_of_an_unpadded_network_uses_the_target_centre() -> None:
    torch.manual_seed(0)
    kwargs = {"kernels": [4, 4, 8], "fully_connected": [8], "dropout": 0.0}
    module = brats_module(network="densenet3d", network_kwargs=kwargs, roi_size=(12, 12, 12))
    image, label = torch.randn(1, 2, 12, 12, 12), torch.randint(-1, 4, (1, 1, 12, 12, 12))
    logits = module.network(image)
    assert logits.shape == (1, 3, 6, 6, 6)
    targets = module.labels.region_targets(label[..., 3:-3, 3:-3, 3:-3])
    expected = build_loss("dice_ce", region_based=True)(logits, targets)
    assert module.training_losses(image, label)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():
        assert module.eval().predict_logits(torch.randn(1, 2, 13, 9, 15)).shape == (1, 3, 13, 9, 15)


def test_region_mode_trains_and_overfits_one_batch() -> None:
    torch.manual_seed(0)
    module = brats_module(network_kwargs={"base_features": 4}, optimizer=partial(torch.optim.AdamW, lr=0.01),
                          lr_scheduler=None)
    optimizer = module.configure_optimizers()
    coarse = torch.randn(2, 2, 4, 4, 4)
    image = F.interpolate(coarse, size=(16, 16, 16), mode="trilinear")
    # Nested like a tumour: edema where channel 0 > 0, core inside it, enhancing inside the core.
    tumour, core = image[:, :1] > 0, (image[:, :1] > 0) & (image[:, 1:] > 0)
    label = 2 * tumour.long() - core.long() + 2 * (core & (image[:, :1] > 0.5)).long()
    label[:, :, :2] = -1  # some ignored voxels too

    def region_dice() -> torch.Tensor:
        """Hard Dice per region of the batch, as the training forward pass sees it."""
        with torch.no_grad():
            return dice_per_structure(*module.labels.dice_masks(module(image), label)).mean(dim=0)

    before = region_dice()
    for step in range(40):
        losses = module.training_losses(image, label)
        assert torch.isfinite(losses["loss"])
        optimizer.zero_grad()
        losses["loss"].backward()
        if step == 0:
            assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
        optimizer.step()
    after = region_dice()
    assert after.shape == (3,)
    # Measured: WT, TC, ET from (0.06, 0.29, 0.12) to (0.97, 0.59, 0.85).
    assert (after > before + 0.2).all() and after.mean() > 0.7, (before, after)


@pytest.mark.filterwarnings(r"ignore:.*along axis \d on the network's grid")  # 4 voxels in a row: a thin slab
def test_region_predictions_are_written_as_dataset_label_values(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.segmenter import Segmenter

    module = brats_module()
    regions = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.float32)
    # predict_step's windows are the Segmenter's (predict.py's path): its logits stand in here.
    monkeypatch.setattr(Segmenter, "logits", lambda self, image: (regions * 10 - 5).view(1, 3, 4, 1, 1))
    batch = {"image": torch.zeros(1, 2, 4, 1, 1), "subject": ["BraTS-1"], "affine": torch.eye(4)[None]}
    prediction = module.predict_step(batch, 0)
    assert prediction["prediction"].shape == (1, 4, 1, 1)
    assert prediction["prediction"].view(-1).tolist() == [0, 2, 1, 3]
    writer = SegmentationWriter(output_dir=str(tmp_path))
    writer.setup(SimpleNamespace(datamodule=SimpleNamespace(predict_subjects=[])), module, "predict")
    writer.write_on_batch_end(None, module, prediction, None, batch, 0, 0)
    written = nib.load(tmp_path / "BraTS-1_seg.nii.gz")
    assert np.asarray(written.dataobj).reshape(-1).tolist() == [0, 2, 1, 4]  # dataset values: ET is 4
