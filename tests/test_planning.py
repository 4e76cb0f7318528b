"""Planning from a dataset fingerprint: nnU-Net's rules, checked by hand, and plan.py on the
layouts the tests write."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from layouts import MRBRAINS_ZOOMS, write_brats, write_mrbrains18
from torch import nn

from core.planning import (
    Fingerprint,
    MemoryModel,
    dynunet_topology,
    plan_training,
    saved_elements,
    target_spacing,
)
from networks import build_network
from plan import main
from train import run_cli


def test_target_spacing_is_the_median_unless_one_axis_is_much_coarser_with_few_slices() -> None:
    spacings = [[1.0, 1.0, 1.0], [1.2, 1.2, 1.2], [0.8, 0.8, 0.8]]
    assert target_spacing(spacings, [[100, 100, 100]] * 3)[0] == [1.0, 1.0, 1.0]
    # MRBrainS-like: 0.958 mm in-plane, 3 mm slices (48 of them against 240 in-plane voxels): 3.13x
    # coarser with few slices, so the target is the 10th percentile of the slice spacings.
    thick = [[0.958, 0.958, 3.0]] * 4 + [[0.958, 0.958, 2.0]]
    spacing, why = target_spacing(thick, [[240, 240, 48]] * 5)
    assert spacing == [0.958, 0.958, pytest.approx(np.percentile([3.0, 3.0, 3.0, 3.0, 2.0], 10))]
    assert "10th percentile" in why
    # As anisotropic, but with as many slices as in-plane voxels: the median stands.
    assert target_spacing(thick, [[240, 240, 240]] * 5)[0] == [0.958, 0.958, 3.0]


def test_dynunet_levels_stop_at_a_bottleneck_of_four_voxels() -> None:
    assert dynunet_topology([80, 96, 80]) == {"levels": 5, "filters": [32, 64, 128, 256, 320],
                                              "deep_supervision": True, "deep_supr_num": 2}
    assert dynunet_topology([128, 128, 128])["filters"] == [32, 64, 128, 256, 320, 320]
    assert dynunet_topology([32, 64, 64])["levels"] == 4  # 32 / 2^3 = 4


def test_memory_counts_the_tensors_autograd_saves_once_each() -> None:
    # The first convolution saves its input (1 map), ReLU its output (2 maps), which the second
    # convolution saves again as its input: the same tensor, counted once. The weights are not
    # activations (they are counted with the optimiser).
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.ReLU(), nn.Conv3d(2, 3, 1))
    assert saved_elements(net.to("meta"), 1, (4, 4, 4)) == (1 + 2) * 64
    model = MemoryModel.of(nn.Sequential(nn.Conv3d(1, 2, 1), nn.ReLU(), nn.Conv3d(2, 3, 1)), 1, 4, "32")
    assert (model.per_voxel, model.fixed, model.parameters) == (3, 0, 2 * 1 + 2 + 3 * 2 + 3)
    assert model.saved_bytes((8, 8, 8), batch_size=2) == 2 * 512 * 3 * 4  # float32
    assert MemoryModel(1, 3, precision="bf16-mixed").saved_bytes((8, 8, 8), 2) == 2 * 512 * 3 * 2


def test_the_memory_estimate_is_what_autograd_saves_for_a_real_network() -> None:
    """Counted on the meta device at two probes, scaled to the patch; against the storages a
    real float32 forward pass saves (benchmarks/memory_plan.py prints the table for large nets)."""
    from benchmarks.memory_plan import saved_bytes

    net = build_network("dynunet", in_channels=2, num_classes=4, **dynunet_topology([32, 32, 48]))
    estimate = MemoryModel.of(net, 2, 8, "32").saved_bytes((32, 32, 48), 2)
    assert estimate == pytest.approx(saved_bytes(net, 2, (32, 32, 48), 2), rel=0.02)
    assert all(p.device.type == "cpu" for p in net.parameters())  # counted on a copy


def synthetic_fingerprint(shape: tuple[int, int, int] = (160, 192, 160), subjects: int = 20) -> Fingerprint:
    return Fingerprint(subjects=[f"s{i}" for i in range(subjects)], modalities=["T1", "T2"],
                       spacings=[[1.0, 1.0, 1.0]] * subjects, shapes=[list(shape)] * subjects,
                       intensities={}, class_fractions={})


def test_a_larger_gpu_gets_a_larger_patch_or_batch_and_every_plan_fits_its_budget() -> None:
    fp = synthetic_fingerprint()
    plans = {gb: plan_training(fp, "dynunet", gb, in_channels=2, num_outputs=4) for gb in (8, 24, 80)}
    volumes = [np.prod(p.patch_size) * p.batch_size for p in plans.values()]
    assert volumes == sorted(volumes) and volumes[0] < volumes[-1]
    for gb, plan in plans.items():
        divisor = 2 ** (plan.network_kwargs["levels"] - 1)
        assert all(side % divisor == 0 for side in plan.patch_size) and plan.batch_size >= 2
        assert plan.estimated_memory_gb <= 0.9 * gb
        assert all(p <= s for p, s in zip(plan.patch_size, (160, 192, 160), strict=True))


def test_plan_py_on_the_demo_layout_writes_a_preset_that_trains(tiny_demo_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.yaml"
    data = ["--config", "configs/demo.yaml", "--data.init_args.data_dir", str(tiny_demo_dir),
            "--data.init_args.val_subjects", "[subject-3]", "--data.init_args.test_subjects", "[subject-4]",
            "--data.init_args.cache_dir", "null"]
    assert main([*data, "--family", "dynunet", "--gpu-memory", "8", "--output", str(out)]) == 0
    fingerprint = json.loads(out.with_suffix(".fingerprint.json").read_text())
    assert fingerprint["subjects"] == ["subject-1", "subject-2", "subject-3"]  # the test subject is not read
    assert fingerprint["spacings"][0] == [6.0, 6.0, 6.0] and fingerprint["modalities"] == ["T1", "T2"]
    assert sum(fingerprint["class_fractions"].values()) == pytest.approx(1.0)
    preset = yaml.safe_load(out.read_text())
    assert preset["data"]["init_args"]["target_spacing"] is None  # every scan already at the target
    patch = preset["data"]["init_args"]["patch_size"]
    assert all(p <= s for p, s in zip(patch, fingerprint["shapes"][0], strict=True))
    assert "# target spacing [6.0, 6.0, 6.0]" in capsys.readouterr().out
    planned = out.read_text()
    for output, extra, said in ((out, [], f"{out}: holds an earlier plan; pass --overwrite to replace it"),
                                (tmp_path / "mine.yaml", ["--overwrite"], "exists and was not written by plan.py"),
                                (tmp_path / "alone.yaml", [], "alone.fingerprint.json: exists without the plan")):
        if output.name == "mine.yaml":
            output.write_text("data: {}  # a preset of the user's\n")
        if output.name == "alone.yaml":
            output.with_suffix(".fingerprint.json").write_text("{}")
        with pytest.raises(SystemExit) as stopped:  # before the dataset is read
            main([*data, "--family", "dynunet", "--output", str(output), *extra])
        assert stopped.value.code == 2 and said in capsys.readouterr().err
    assert out.read_text() == planned and (tmp_path / "mine.yaml").read_text() == "data: {}  # a preset of the user's\n"
    assert main([*data, "--family", "dynunet", "--gpu-memory", "8", "--output", str(out), "--overwrite"]) == 0
    assert out.read_text() == planned  # the same plan again
    run = run_cli(["fit", *data, "--config", str(out), "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                   "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                   "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(tmp_path / "ckpt")],
                  save_config=False)
    assert run.model.hparams.network == "dynunet" and list(run.datamodule.patch_size) == patch
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])


def test_plan_py_on_the_mrbrains_and_brats_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mrbrains = write_mrbrains18(tmp_path / "mrb")
    assert main(["--config", "configs/datasets/mrbrains18.yaml", "--data.init_args.data_dir", str(mrbrains),
                 "--data.init_args.cache_dir", "null", "--family", "unet3d", "--gpu-memory", "24"]) == 0
    printed = capsys.readouterr().out
    preset = yaml.safe_load(printed)
    assert preset["model"] == {"network": "unet3d", "network_kwargs": {"base_features": 32, "deep_supervision": 2},
                               "inference_roi_size": None}
    assert f"median spacing {[round(z, 3) for z in MRBRAINS_ZOOMS]}" in printed
    brats = write_brats(tmp_path / "brats", 2021)
    assert main(["--config", "configs/datasets/brats.yaml", "--data.init_args.data_dir", str(brats),
                 "--data.init_args.cache_dir", "null", "--data.init_args.crop_to_nonzero", "true",
                 "--family", "dynunet", "--gpu-memory", "80"]) == 0
    printed = capsys.readouterr().out
    assert "classes: background" in printed and "T1ce: foreground mean" in printed
    assert yaml.safe_load(printed)["data"]["init_args"]["batch_size"] >= 2
    assert "(of the non-zero boxes training crops to)" in printed  # planned for the boxes training sees
