"""Fine-tuning from a checkpoint (core.transfer, --model.pretrained): weights matched by modality
and by class or region name, checked to compute what the checkpoint computed, refused where a
network cannot be matched so."""

import os
import warnings
from pathlib import Path

import pytest
import torch
from layouts import write_brats

from core.checkpoint import network_checkpoint, read_checkpoint
from core.dataset_labels import BRATS_POST_TREATMENT_REGIONS, BRATS_REGIONS, ISEG
from core.io import DataError, DataWarning
from core.labels import LabelSpace
from core.transfer import transfer_weights
from networks import build_network
from train import run_cli

from network_cases import SMALL

BRATS_MODALITIES = ["T1", "T1ce", "T2", "FLAIR"]


def test_channels_by_modality_and_outputs_by_name_tensor_by_tensor() -> None:
    """A 4-modality BraTS model (WT, TC, ET) starts a FLAIR + PD post-treatment model (WT, TC,
    ET, RC): the FLAIR filters are the checkpoint's FLAIR filters, PD's the mean of its four,
    WT/TC/ET rows the checkpoint's, RC's row the fresh one; every other tensor the checkpoint's."""
    kwargs, size = SMALL["unet3d"]
    torch.manual_seed(0)
    source = build_network("unet3d", in_channels=4, num_classes=3, **kwargs)
    checkpoint = network_checkpoint(source, "unet3d", kwargs, BRATS_MODALITIES, BRATS_REGIONS)
    target = build_network("unet3d", in_channels=2, num_classes=4, **kwargs)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    transfer = transfer_weights(target, checkpoint, ["FLAIR", "PD"], BRATS_POST_TREATMENT_REGIONS, size, "brats.ckpt",
                                network_name="unet3d")
    theirs, ours = source.state_dict(), target.state_dict()
    first, head, bias = "encoder.0.0.0.weight", "head.weight", "head.bias"
    torch.testing.assert_close(ours[first][:, 0], theirs[first][:, 3])  # FLAIR
    torch.testing.assert_close(ours[first][:, 1], theirs[first].mean(dim=1))  # PD: the mean of T1, T1ce, T2, FLAIR
    torch.testing.assert_close(ours[head][:3], theirs[head])  # WT, TC, ET
    torch.testing.assert_close(ours[bias][:3], theirs[bias])
    torch.testing.assert_close(ours[head][3], fresh[head][3])  # RC: as initialised
    assert not torch.equal(ours[head][3], theirs[head][0])
    others = [k for k in ours if k not in (first, head, bias)]
    assert others and all(torch.equal(ours[k], theirs[k]) for k in others)
    assert transfer.tensors == len(others)
    assert transfer.modalities == {"FLAIR": "FLAIR", "PD": None}
    assert transfer.outputs == {"WT": "WT", "TC": "TC", "ET": "ET", "RC": None}
    assert transfer.summary() == (
        f"initialised from brats.ckpt: {len(others)} tensors whole; input channels by modality (FLAIR of T1, T1ce, "
        "T2, FLAIR; from the mean of its channels: PD); outputs by name (WT, TC, ET of WT, TC, ET; freshly "
        "initialised: RC)")


# One network per way of reading the scans and writing the outputs: plain (unet3d), blocks
# registered twice and deep-supervision heads (dynunet), a norm after the last convolution
# (highresnet), a branch that rebuilds the scans (resnet3d_vae).
@pytest.mark.parametrize("name", ["unet3d", "dynunet", "highresnet", "resnet3d_vae"])
def test_a_transferred_network_computes_the_checkpoints_outputs_on_the_shared_channels(name: str) -> None:
    """iSeg's T1 + T2 model (background, CSF, GM, WM; batch norms' running statistics as a
    trained model has them) starts a T2 + T1 + FLAIR model of background, WM, GM, CSF: on T2 and
    T1 scans (FLAIR zero) its logits are the checkpoint's, class by class."""
    kwargs, size = SMALL[name]
    torch.manual_seed(1)
    source = build_network(name, in_channels=2, num_classes=4, **kwargs).eval()
    for buffer_name, buffer in source.named_buffers():
        if buffer_name.endswith("running_mean"):
            buffer.normal_()
        elif buffer_name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    checkpoint = network_checkpoint(source, name, kwargs, ["T1", "T2"], ISEG)
    labels = LabelSpace.from_values({0: "background", 1: "WM", 2: "GM", 3: "CSF"})  # ISEG's classes, reordered
    target = build_network(name, in_channels=3, num_classes=4, **kwargs)
    transfer = transfer_weights(target, checkpoint, ["T2", "T1", "FLAIR"], labels, size, "iseg.ckpt")
    assert transfer.modalities == {"T2": "T2", "T1": "T1", "FLAIR": None}
    assert transfer.outputs == {"background": "background", "WM": "WM", "GM": "GM", "CSF": "CSF"}
    t1, t2 = torch.randn((1, 1, *size)), torch.randn((1, 1, *size))
    with torch.no_grad():
        expected = source(torch.cat([t1, t2], 1))
        got = target.eval()(torch.cat([t2, t1, torch.zeros_like(t1)], 1))
    scale = float(expected.abs().max())
    for ours, theirs in ((0, 0), (1, 3), (2, 2), (3, 1)):  # background, WM, GM, CSF
        torch.testing.assert_close(got[:, ours], expected[:, theirs], rtol=1e-3, atol=1e-4 * scale)


def test_what_cannot_be_matched_by_name_is_refused_and_leaves_the_network_as_it_was() -> None:
    kwargs, size = SMALL["vnet"]
    source = build_network("vnet", in_channels=2, num_classes=4, **kwargs)
    checkpoint = network_checkpoint(source, "vnet", kwargs, ["T1", "T2"], ISEG)
    target = build_network("vnet", in_channels=2, num_classes=4, **kwargs)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    # V-Net adds its input to the first stage's maps channel by channel, by position: the check
    # that the matched network computes the checkpoint's outputs finds that.
    with pytest.raises(DataError, match=r"vnet\.ckpt: vnet reads its modalities or writes its outputs in layers that "
                                        r"cannot be matched by name .* modalities \['T1', 'T2'\]"):
        transfer_weights(target, checkpoint, ["T2", "T1"], ISEG, size, "vnet.ckpt")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # The same model order takes everything whole.
    assert transfer_weights(target, checkpoint, ["T1", "T2"], ISEG, size, "vnet.ckpt").tensors == len(before)
    # A pathway per modality.
    kwargs, size = SMALL["densenet3d_late_fusion"]
    source = build_network("densenet3d_late_fusion", in_channels=2, num_classes=4, **kwargs)
    checkpoint = network_checkpoint(source, "densenet3d_late_fusion", kwargs, ["T1", "T2"], ISEG)
    target = build_network("densenet3d_late_fusion", in_channels=2, num_classes=4, **kwargs)
    with pytest.raises(DataError, match=r"keeps a pathway per modality \(paths\.0\..*\), which cannot be matched"):
        transfer_weights(target, checkpoint, ["T2", "T1"], ISEG, size, "late.ckpt")
    # Another network, or other options.
    with pytest.raises(DataError, match=r"late\.ckpt: holds a densenet3d_late_fusion network, this model is unet3d"):
        transfer_weights(target, checkpoint, ["T1", "T2"], ISEG, size, "late.ckpt", network_name="unet3d")
    kwargs, size = SMALL["unet3d"]
    checkpoint = network_checkpoint(build_network("unet3d", in_channels=2, num_classes=4, **kwargs), "unet3d", kwargs,
                               ["T1", "T2"], ISEG)
    wider = build_network("unet3d", in_channels=2, num_classes=4, base_features=8)
    with pytest.raises(DataError, match=r"its network \(unet3d, .*\) is not this one: encoder\.0\.0\.0\.weight has "
                                        r"shape \(4, 2, 3, 3, 3\) there, \(8, 2, 3, 3, 3\) here.*same options"):
        transfer_weights(wider, checkpoint, ["T1", "T2"], ISEG, size, "u.ckpt")


def brats2021_checkpoint(tmp_path: Path) -> Path:
    """An untrained BraTS 2021 model (four modalities; WT, TC, ET) as a checkpoint file of this codebase."""
    from core.checkpoint import write_checkpoint
    from lightning_modules import SegmentationModule

    model = SegmentationModule(network_kwargs={"base_features": 2}, in_channels=4, modalities=BRATS_MODALITIES,
                               label_space=BRATS_REGIONS.to_dict(), roi_size=(16, 16, 8))
    return write_checkpoint(tmp_path / "brats2021" / "last.ckpt", model.state_dict(), dict(model.hparams),
                            "datamodules.BraTSDataModule", {"data_dir": str(write_brats(tmp_path, 2021, cases=1))})


def test_a_checkpoint_evaluated_on_data_it_was_not_trained_for_is_said_before_any_work(tmp_path: Path) -> None:
    """``train.py test --ckpt_path``: modalities in another order, or other outputs, are one line
    (they were a size-mismatch traceback, or with the channels reordered wrong scores in silence);
    the same outputs under other values (BraTS 2023's ET 3 for 2021's 4) are read by position, said."""
    source = brats2021_checkpoint(tmp_path)
    common = ["test", "--config", "configs/datasets/brats.yaml", "--ckpt_path", str(source),
              "--data.init_args.data_dir", str(write_brats(tmp_path, 2024, cases=2)),
              "--data.init_args.patch_size", "[16, 16, 8]", "--data.init_args.cache_dir", "null",
              "--data.init_args.num_workers", "0", "--data.init_args.val_fraction", "0",
              "--data.init_args.test_subjects", "[BraTS-GLI-02001-100]", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
              "--test_report.output_dir", str(tmp_path / "test"), "--test_report.save_png", "false"]
    with pytest.raises(DataError, match=r"last\.ckpt: was trained on the modalities \['T1', 'T1ce', 'T2', 'FLAIR'\], "
                                        r"in that order; the data gives \['FLAIR', 'T1ce', 'T2', 'T1'\]"):
        run_cli([*common, "--data.init_args.modalities", "[FLAIR, T1ce, T2, T1]"])
    with pytest.raises(DataError, match=r"last\.ckpt: was trained for \['WT', 'TC', 'ET'\]; the data here has "
                                        r"\['WT', 'TC', 'ET', 'RC'\] \(evaluate it on data of its classes"):
        run_cli([*common, "--data.init_args.label_convention", "brats_post_treatment"])
    assert not (tmp_path / "test").exists()  # refused before any work
    with pytest.warns(DataWarning, match=r"its outputs \['WT', 'TC', 'ET'\] \(values \[0, 1, 2, 4\]\) are read as the "
                                         r"data's \['WT', 'TC', 'ET'\] \(values \[0, 1, 2, 3\]\), one by one"):
        tested = run_cli([*common, "--data.init_args.label_convention", "brats2023"])
    assert set(tested.trainer.callback_metrics) >= {"test/dice_WT", "test/dice_TC", "test/dice_ET"}


def test_fine_tuning_through_the_cli_from_brats_2021_to_post_treatment(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """``--model.pretrained``: a BraTS 2021 model (four modalities; WT, TC, ET; a checkpoint file
    of this codebase) starts a FLAIR + T1ce model of 2024's post-treatment regions (RC new). With a
    learning rate of 0 the fine-tuned checkpoint holds exactly the transferred weights; it records
    the source absolute; resuming it reads the source no more (the file may be gone)."""
    common = ["--config", "configs/datasets/brats.yaml", "--data.init_args.patch_size", "[16, 16, 8]",
              "--data.init_args.num_workers", "0", "--data.init_args.cache_dir", "null",
              "--model.network_kwargs", "{base_features: 2}", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
              "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    source = brats2021_checkpoint(tmp_path)
    post_treatment = ["--data.init_args.data_dir", str(write_brats(tmp_path, 2024, cases=3)),
                      "--data.init_args.label_convention", "brats_post_treatment",
                      "--data.init_args.modalities", "[FLAIR, T1ce]"]
    with caplog.at_level("INFO"):
        run_cli(["fit", *common, *post_treatment, "--model.pretrained", os.path.relpath(source),
                 "--model.optimizer", "{class_path: torch.optim.AdamW, init_args: {lr: 0.0}}",
                 "--checkpoint.dirpath", str(tmp_path / "tuned")])
    said = caplog.text
    assert (f"initialised from {source}: " in said and "input channels by modality (FLAIR, T1ce of T1, T1ce, T2, "
            "FLAIR)" in said and "outputs by name (WT, TC, ET of WT, TC, ET; freshly initialised: RC)" in said)
    tuned = read_checkpoint(tmp_path / "tuned" / "last.ckpt")
    assert tuned["hyper_parameters"]["pretrained"] == str(source)
    theirs, ours = read_checkpoint(source)["state_dict"], tuned["state_dict"]
    first, head = "network.encoder.0.0.0.weight", "network.head.weight"
    torch.testing.assert_close(ours[first], theirs[first][:, [3, 1]])  # FLAIR, T1ce
    torch.testing.assert_close(ours[head][:3], theirs[head])
    parameters = {f"network.{name}" for name, _ in build_network("unet3d", in_channels=2, num_classes=4,
                                                                   base_features=2).named_parameters()}
    assert all(torch.equal(ours[k], theirs[k]) for k in parameters - {first, head, "network.head.bias"})
    source.unlink()
    caplog.clear()
    with caplog.at_level("INFO"), warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the same file named relatively: no "not as given"
        run_cli(["fit", *common, *post_treatment, "--model.pretrained", os.path.relpath(source),
                 "--trainer.max_epochs", "2", "--ckpt_path", str(tmp_path / "tuned" / "last.ckpt"),
                 "--checkpoint.dirpath", str(tmp_path / "tuned")])
    assert "initialised from" not in caplog.text and "Restoring states from the checkpoint" in caplog.text
    assert read_checkpoint(tmp_path / "tuned" / "last.ckpt")["epoch"] == 1


def test_a_fit_from_python_loads_the_pretrained_weights_when_it_starts_never_when_it_resumes(tmp_path: Path) -> None:
    """``SegmentationModule(pretrained=...)`` with a Trainer of one's own: the weights come in at
    ``on_fit_start`` (once), and not in a fit that resumes from a checkpoint of its own."""
    from core.checkpoint import write_checkpoint
    from lightning_modules import SegmentationModule
    from lightning_modules.trainer import Trainer

    common = {"network": "unet3d", "network_kwargs": {"base_features": 2}, "label_space": ISEG.to_dict(),
              "roi_size": (16, 16, 16)}
    source = SegmentationModule(**common, in_channels=2, modalities=["T1", "T2"])
    path = write_checkpoint(tmp_path / "t1t2.ckpt", source.state_dict(), dict(source.hparams),
                            "datamodules.ISeg2017DataModule", {})
    model = SegmentationModule(**common, in_channels=1, modalities=["T2"], pretrained=str(path))
    assert model.hparams.pretrained == str(path.resolve())
    fresh = model.network.encoder[0][0][0].weight.detach().clone()
    model.trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model.trainer.ckpt_path = str(tmp_path / "own_run_last.ckpt")  # a resumed fit: its own weights
    model.on_fit_start()
    torch.testing.assert_close(model.network.encoder[0][0][0].weight, fresh)
    model.trainer.ckpt_path = None
    model.on_fit_start()
    expected = source.network.encoder[0][0][0].weight[:, 1:2]  # T2's filters
    torch.testing.assert_close(model.network.encoder[0][0][0].weight, expected)
    assert model.load_pretrained() is None  # once
