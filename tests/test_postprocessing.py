"""Keeping the largest connected component (nnU-Net's postprocessing): the component rule, its
choice by the Dice it gains on held-out subjects, and predict.py applying it."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import write_nifti

import evaluate
from core.io import DataError
from core.labels import LabelSpace
from core.postprocessing import FOREGROUND, LargestComponentGains, class_groups, keep_largest, largest_component

ISEG = LabelSpace.from_values({0: "background", 10: "CSF", 150: "GM", 250: "WM"})


def test_the_largest_26_connected_component_is_kept_and_the_rest_becomes_background() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[4, 4, 4] = True  # touches the cube by a corner only: the same 26-connected component
    mask[7:9, 7:9, 7:9] = True  # 8 voxels apart
    kept = largest_component(mask)
    assert kept.sum() == 28 and kept[4, 4, 4] and not kept[7:9, 7:9, 7:9].any()
    assert largest_component(np.zeros((3, 3, 3), dtype=bool)).sum() == 0
    labels = np.where(mask, 2, 0)
    labels[0, 9, 0] = 1  # class 1, one voxel: its own largest component
    labels[9, 0, 9] = 1
    out = keep_largest(labels, [[2], [1]])
    assert (out == 2).sum() == 28 and (out == 1).sum() == 1 and out[7, 7, 7] == 0
    assert (labels == 2).sum() == 36  # the input untouched
    both = keep_largest(labels, [[1, 2]])  # one group: the union's largest component
    assert (both > 0).sum() == 28


def test_structures_are_named_by_class_or_foreground_and_regions_refused() -> None:
    assert class_groups(ISEG, ["WM", FOREGROUND, "CSF"]) == [[3], [1, 2, 3], [1]]
    with pytest.raises(DataError, match=r"--keep-largest: unknown structures \['white'\]; choose from "
                                        r"\['foreground', 'CSF', 'GM', 'WM'\]"):
        class_groups(ISEG, ["white"])
    regions = LabelSpace.from_values({0: "background", 1: "NCR", 2: "ED", 4: "ET"}).with_regions(
        {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]})
    with pytest.raises(DataError, match=r"applies to class maps; this model predicts regions \(WT, TC, ET\)"):
        class_groups(regions, ["WT"])
    assert class_groups(regions, []) == []  # nothing asked: nothing to refuse


def test_gains_are_the_mean_dice_before_and_after_by_hand() -> None:
    truth = np.zeros((12, 12, 12), dtype=np.int16)
    truth[2:6, 2:6, 2:6] = 250  # WM: 64 voxels
    truth[8:10, 8:10, 8:10] = 10  # CSF: 8 voxels
    prediction = truth.copy()
    prediction[0, 11, 0] = 250  # a stray WM voxel
    prediction[8:10, 8:10, 8:10] = 0
    prediction[8, 8, 8] = prediction[9, 9, 9] = prediction[8, 9, 8] = 10  # CSF: 3 voxels, two pieces (26: one)
    adding = LargestComponentGains({"CSF": [10], "GM": [150], "WM": [250]})
    adding.add(prediction, truth)
    gains = adding.means()
    assert gains["WM"] == pytest.approx((2 * 64 / 129, 1.0))
    assert gains["CSF"] == pytest.approx((2 * 3 / 11, 2 * 3 / 11))  # diagonal neighbours: one component
    assert gains["GM"] == (1.0, 1.0)  # empty in both: 1
    # The foreground as one: its largest component is the WM cube, so the CSF apart from it goes too.
    assert gains[FOREGROUND] == pytest.approx((np.mean([6 / 11, 1.0, 128 / 129]), np.mean([0.0, 1.0, 1.0])))


def test_evaluate_says_which_structures_gain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = np.zeros((12, 12, 12), dtype=np.uint8)
    truth[2:6, 2:6, 2:6], truth[7:11, 7:11, 2:6] = 250, 150
    truth[2:4, 8:10, 8:10], truth[8:10, 2:4, 8:10] = 10, 10  # CSF in two pieces
    prediction = truth.copy()
    prediction[0, 11, 11] = 250  # a stray WM island
    write_nifti(truth, gt_dir / "subject-1-label.nii.gz")
    write_nifti(prediction, pred_dir / "subject-1_seg.nii.gz")
    args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "iseg", "--output", str(tmp_path / "out")]
    assert evaluate.main([*args, "--keep-largest-gains"]) == 0
    out = capsys.readouterr().out
    assert "| WM | 0.9922 | 1.0000 | +0.0078 |" in out  # 128/129: the stray voxel gone
    assert "| CSF | 1.0000 | 0.6667 | -0.3333 |" in out  # one of its two pieces gone: 2*8/(8+16)
    assert "gains: predict.py --keep-largest WM\n" in out
    rows, _ = evaluate.evaluate_matching(pred_dir, gt_dir, "iseg")
    assert {r["structure"]: r["dice"] for r in rows}["WM"] == pytest.approx(128 / 129)  # the scores stay as predicted
    write_nifti(np.zeros((12, 12, 12), dtype=np.uint8), gt_dir / "subject-1-label.nii.gz")
    with pytest.raises(evaluate.EvaluationError, match=r"--keep-largest-gains: the brats structures overlap "
                                                       r"\(regions: \['WT', 'TC', 'ET'\]\)"):
        evaluate.evaluate_matching(pred_dir, gt_dir, "brats", keep_largest=True)


def test_predict_keeps_the_largest_component_and_records_it(trained_checkpoint: Path, tiny_demo_dir: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``predict.py --keep-largest WM foreground``: the segmentation is the plain one with the
    component rule applied (in the dataset's values), its log and stamp say so (a continued run
    with other postprocessing segments again); an unknown name is one line before any work."""
    from core.export import stamp_of
    from predict import main

    files = [str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")]
    main(["--checkpoint", str(trained_checkpoint), "--input", *files, "--output", str(tmp_path / "plain")])
    main(["--checkpoint", str(trained_checkpoint), "--input", *files, "--output", str(tmp_path / "kept"),
          "--keep-largest", "WM", "foreground"])
    plain = np.asarray(nib.load(tmp_path / "plain" / "subject-4_seg.nii.gz").dataobj)
    kept = np.asarray(nib.load(tmp_path / "kept" / "subject-4_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(kept, keep_largest(plain, [[250], [10, 150, 250]]))
    log = json.loads((tmp_path / "kept" / "predictions.jsonl").read_text().splitlines()[-1])
    assert log["keep_largest"] == ["WM", "foreground"]
    assert stamp_of(tmp_path / "kept" / "subject-4_seg.nii.gz")["keep_largest"] == ["WM", "foreground"]
    assert "keep_largest" not in stamp_of(tmp_path / "plain" / "subject-4_seg.nii.gz")
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(trained_checkpoint), "--input", *files, "--output", str(tmp_path / "never"),
              "--keep-largest", "white"])
    assert stopped.value.code == 2 and "--keep-largest: unknown structures ['white']" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()

    # train.py predict: the same segmentation and the same stamp; a name the model lacks before any work
    from train import run_cli

    from conftest import tiny_run_args

    def train_py_predict(output: Path, names: str) -> None:
        run_cli(tiny_run_args("predict", tiny_demo_dir, None, "--ckpt_path", str(trained_checkpoint),
                              "--prediction_writer.output_dir", str(output),
                              "--prediction_writer.keep_largest", names), save_config=False)

    train_py_predict(tmp_path / "cli", "[WM, foreground]")
    cli = tmp_path / "cli" / "subject-4_seg.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(cli).dataobj), kept)
    assert stamp_of(cli) == stamp_of(tmp_path / "kept" / "subject-4_seg.nii.gz")
    with pytest.raises(DataError, match=r"--keep-largest: unknown structures \['white'\]"):
        train_py_predict(tmp_path / "cli-never", "[white]")
    assert not (tmp_path / "cli-never").exists()
