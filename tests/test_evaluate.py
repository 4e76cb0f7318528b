"""Segmentation metrics (core/metrics.py) and the evaluate.py scorer, on real numbers."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from layouts import BRATS_AFFINE, MRBRAINS_ZOOMS, write_brats, write_mrbrains18, write_nifti, write_nifti_folder
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
from scipy import ndimage

import evaluate
from core.dataset_labels import DATASET_LABELS
from core.metrics import score_structure, score_subject, volume_diagonal

SHAPE = (12, 12, 12)


def cube(start: tuple[int, int, int], side: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


@pytest.mark.parametrize("k", [0, 1, 2, 4])
@pytest.mark.parametrize("axis", [0, 2])
def test_dice_of_shifted_cubes_by_hand(k: int, axis: int) -> None:
    """A side-6 cube against itself shifted by k voxels: overlap 6*6*(6-k) -> DSC (6-k)/6."""
    start = [2, 2, 2]
    start[axis] += k
    scores = score_structure(cube(tuple(start), 6), cube((2, 2, 2), 6), (1.0, 1.0, 1.0))
    assert scores.dice == pytest.approx((6 - k) / 6)
    assert scores.avd == 0.0
    assert scores.sensitivity == pytest.approx((6 - k) / 6)  # same volumes: found share = DSC


def test_sensitivity_is_the_share_of_the_truth_found() -> None:
    """Truth a side-4 cube (64 voxels), prediction a side-6 cube holding it: everything found
    (sensitivity 1) while DSC = 2*64 / (216 + 64); the other way round, 64 of 216 found."""
    small, large = cube((3, 3, 3), 4), cube((2, 2, 2), 6)
    assert score_structure(large, small, (1.0, 1.0, 1.0)).sensitivity == 1.0
    assert score_structure(large, small, (1.0, 1.0, 1.0)).dice == pytest.approx(128 / 280)
    assert score_structure(small, large, (1.0, 1.0, 1.0)).sensitivity == pytest.approx(64 / 216)


def test_distances_of_shifted_small_cubes_by_hand_anisotropic() -> None:
    """Side-2 cubes are all surface. Shift 1 along axis 0 (3 mm voxels): per direction 4
    distances 0 and 4 of 3 mm -> HD95 3 mm, ASSD 1.5 mm, DSC 8/16."""
    scores = score_structure(cube((5, 4, 4), 2), cube((4, 4, 4), 2), (3.0, 1.0, 1.0))
    assert scores.dice == pytest.approx(0.5)
    assert scores.hd95 == pytest.approx(3.0)
    assert scores.assd == pytest.approx(1.5)
    # Shift 2 along axis 2 (0.5 mm voxels): distances 1 and 2 voxels, 4 each per direction:
    # 95th percentile 2 voxels = 1 mm, mean 1.5 voxels = 0.75 mm; no overlap.
    scores = score_structure(cube((4, 4, 6), 2), cube((4, 4, 4), 2), (1.0, 1.0, 0.5))
    assert scores.dice == 0.0
    assert scores.hd95 == pytest.approx(1.0)
    assert scores.assd == pytest.approx(0.75)


def test_single_voxels_distance_is_the_offset_in_mm() -> None:
    truth = np.zeros(SHAPE, dtype=bool)
    prediction = truth.copy()
    truth[3, 3, 3] = True
    prediction[5, 4, 3] = True  # 2 voxels of 1.5 mm, 1 of 0.7 mm
    expected = math.hypot(3.0, 0.7)
    scores = score_structure(prediction, truth, (1.5, 0.7, 2.0))
    assert (scores.dice, scores.avd) == (0.0, 0.0)
    assert scores.hd95 == pytest.approx(expected)
    assert scores.assd == pytest.approx(expected)


def blob(seed: int, shape: tuple[int, int, int] = (24, 20, 16)) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(noise, 2.0) > 0.05


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_random_blobs(seed: int) -> None:
    prediction, truth = blob(seed), blob(seed + 10)
    assert prediction.any() and truth.any() and (prediction & truth).any()
    spacing = (0.9, 1.2, 3.0)
    scores = score_structure(prediction, truth, spacing)
    pred_t = torch.from_numpy(prediction.astype(np.float32))[None, None]
    truth_t = torch.from_numpy(truth.astype(np.float32))[None, None]
    dice = compute_dice(pred_t, truth_t, include_background=True).item()
    hd95 = compute_hausdorff_distance(pred_t, truth_t, include_background=True, percentile=95,
                                      spacing=list(spacing)).item()
    assd = compute_average_surface_distance(pred_t, truth_t, include_background=True, symmetric=True,
                                            spacing=list(spacing)).item()
    assert scores.dice == pytest.approx(dice, rel=1e-6)
    assert scores.hd95 == pytest.approx(hd95, rel=1e-6)
    assert scores.assd == pytest.approx(assd, rel=1e-6)
    assert scores.avd == pytest.approx(100 * abs(int(prediction.sum()) - int(truth.sum())) / truth.sum())
    assert 0 < scores.dice < 1 and scores.hd95 > 0 and scores.assd > 0


def test_both_empty_is_perfect() -> None:
    empty = np.zeros(SHAPE, dtype=bool)
    scores = score_structure(empty, empty, (1.0, 1.0, 1.0))
    assert (scores.dice, scores.hd95, scores.assd, scores.avd, scores.sensitivity) == (1.0, 0.0, 0.0, 0.0, 1.0)


def test_truth_empty_prediction_not() -> None:
    spacing = (1.0, 2.0, 0.5)
    scores = score_structure(cube((1, 1, 1), 3), np.zeros(SHAPE, dtype=bool), spacing)
    diagonal = math.sqrt(12**2 + 24**2 + 6**2)
    assert volume_diagonal(SHAPE, spacing) == pytest.approx(diagonal)
    assert scores.dice == 0.0
    assert scores.hd95 == pytest.approx(diagonal) and scores.assd == pytest.approx(diagonal)
    assert math.isnan(scores.avd) and math.isnan(scores.sensitivity)


def test_prediction_empty_truth_not() -> None:
    scores = score_structure(np.zeros(SHAPE, dtype=bool), cube((1, 1, 1), 3), (1.0, 1.0, 1.0))
    assert scores.dice == 0.0
    assert scores.hd95 == pytest.approx(math.sqrt(3) * 12) and scores.assd == pytest.approx(math.sqrt(3) * 12)
    assert scores.avd == 100.0 and scores.sensitivity == 0.0


def test_brats_diagonal_matches_the_challenge_constant() -> None:
    assert volume_diagonal((240, 240, 155), (1, 1, 1)) == pytest.approx(373.13, abs=0.01)


def test_valid_mask_removes_voxels_from_both_masks() -> None:
    truth = cube((2, 2, 2), 4)
    prediction = truth | cube((7, 7, 7), 2)  # a spurious blob
    valid = ~cube((7, 7, 7), 2)
    assert score_structure(prediction, truth, (1, 1, 1)).dice < 1
    scores = score_structure(prediction, truth, (1, 1, 1), valid)
    assert (scores.dice, scores.hd95, scores.assd, scores.avd, scores.sensitivity) == (1.0, 0.0, 0.0, 0.0, 1.0)


def test_mrbrains18_ignored_labels_do_not_change_scores() -> None:
    structures, ignore = DATASET_LABELS["mrbrains18"].structure_values, DATASET_LABELS["mrbrains18"].ignored_values
    truth = np.zeros((16, 16, 8), dtype=np.int64)
    truth[2:14, 2:14, 1:7] = 3
    truth[4:8, 4:8, 2:5] = 1
    truth[9:12, 9:12, 3:6] = 9  # infarction
    truth[12, 3, 2] = 10
    prediction = truth.copy()
    prediction[truth == 9] = 3  # whatever the network says there
    prediction[truth == 10] = 1
    scores = score_subject(prediction, truth, MRBRAINS_ZOOMS, structures, ignore)
    for name in ("WM", "cortical_GM"):
        assert (scores[name].dice, scores[name].hd95, scores[name].assd, scores[name].avd) == (1.0, 0.0, 0.0, 0.0)
    assert scores["CSF"].dice == 1.0  # absent and not predicted
    without_ignore = score_subject(prediction, truth, MRBRAINS_ZOOMS, structures)
    assert without_ignore["WM"].dice < 1 and without_ignore["cortical_GM"].dice < 1


def test_brats_regions_by_hand() -> None:
    structures = DATASET_LABELS["brats"].structure_values
    truth = np.zeros((10, 10, 10), dtype=np.int64)
    truth[1:9, 1:9, 1:9] = 2  # oedema 512 voxels
    truth[3:7, 3:7, 3:7] = 4  # enhancing 64
    truth[4:6, 4:6, 4:6] = 1  # necrosis 8 -> ET 56, TC 64, WT 512
    prediction = truth.copy()
    prediction[truth == 1] = 4  # necrosis called enhancing: WT, TC intact, ET 64 vs 56
    scores = score_subject(prediction, truth, (1, 1, 1), structures)
    assert scores["WT"].dice == 1.0 and scores["TC"].dice == 1.0
    assert scores["ET"].dice == pytest.approx(2 * 56 / (64 + 56))
    assert scores["ET"].avd == pytest.approx(100 * 8 / 56)


# --- evaluate.py ---------------------------------------------------------------------------

AFFINE = np.diag([1.0, 2.0, 0.5, 1.0])


def write_pair(pred_dir: Path, gt_dir: Path, subject: str, prediction: np.ndarray, truth: np.ndarray,
               pred_affine: np.ndarray = AFFINE) -> None:
    write_nifti(prediction.astype(np.uint8), pred_dir / f"{subject}_seg.nii.gz", pred_affine)
    write_nifti(truth.astype(np.uint8), gt_dir / f"{subject}_label.nii.gz", AFFINE)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_are_never_replaced_by_another_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``scoring.json`` says what the scores score; the same evaluation again replaces its own,
    another (other ground truth, other options) or files of those names evaluate.py did not
    write are one line and exit 2 before any file is read, unless ``--overwrite``."""
    pred_dir, gt_dir, other_gt, out = (tmp_path / name for name in ("pred", "gt", "gt2", "out"))
    truth = cube((4, 4, 4), 2).astype(np.uint8)
    write_pair(pred_dir, gt_dir, "sub-02", truth, truth)
    write_pair(tmp_path / "unused", other_gt, "sub-02", truth, cube((5, 4, 4), 2).astype(np.uint8))
    args = ["--pred", str(pred_dir), "--dataset", "labels", "--labels", "0:background,1:lesion", "--output", str(out)]
    assert evaluate.main([*args, "--gt", str(gt_dir)]) == 0
    record = json.loads((out / "scoring.json").read_text())
    assert record["gt"] == str(gt_dir.resolve()) and record["labels"] == "0:background,1:lesion"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert evaluate.main([*args, "--gt", str(gt_dir)]) == 0  # the same evaluation: its own scores
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    capsys.readouterr()
    assert evaluate.main([*args, "--gt", str(other_gt)]) == 2
    assert capsys.readouterr().err == (f"evaluate.py: error: {out}: holds the scores of another evaluation "
                                       f"({pred_dir.resolve()} against {gt_dir.resolve()}); refusing to replace them: "
                                       "choose another --output or pass --overwrite\n")
    assert evaluate.main([*args, "--gt", str(gt_dir), "--lesion-wise", "1:10"]) == 2  # another option, another score
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert evaluate.main([*args, "--gt", str(other_gt), "--overwrite"]) == 0
    assert float(read_csv(out / "scores.csv")[0]["dice"]) == pytest.approx(0.5)  # against the cube shifted by 1
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "summary.md").write_text("a summary of another tool\n")
    capsys.readouterr()
    assert evaluate.main([*args[:-1], str(foreign), "--gt", str(gt_dir)]) == 2
    assert "holds summary.md, not recorded as evaluate.py's; refusing to replace them" in capsys.readouterr().err
    assert (foreign / "summary.md").read_text() == "a summary of another tool\n"


def test_cli_end_to_end_writes_the_three_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir, out = tmp_path / "pred", tmp_path / "gt", tmp_path / "out"
    truth = cube((4, 4, 4), 2).astype(np.uint8)
    write_pair(pred_dir, gt_dir, "sub-02", truth, truth)  # perfect
    shifted = cube((5, 4, 4), 2).astype(np.uint8)  # shift 1 along axis 0 (1 mm): DSC 0.5, HD95 1, ASSD 0.5
    write_pair(pred_dir, gt_dir, "sub-10", shifted, truth)
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels",
                          "--labels", "0:background,1:lesion", "--output", str(out)]) == 0
    scores = read_csv(out / "scores.csv")
    assert [(r["subject"], r["structure"]) for r in scores] == [("sub-02", "lesion"), ("sub-10", "lesion")]
    assert list(scores[0]) == ["subject", "structure", "dice", "hd95_mm", "assd_mm", "avd_percent",
                                "sensitivity"]
    assert [float(scores[1][k]) for k in ("dice", "hd95_mm", "assd_mm", "avd_percent")] == pytest.approx(
        [0.5, 1.0, 0.5, 0.0])
    summary = {(r["structure"], r["metric"]): r for r in read_csv(out / "summary.csv")}
    assert float(summary["lesion", "dice"]["mean"]) == pytest.approx(0.75)
    assert float(summary["lesion", "dice"]["std"]) == pytest.approx(0.25)
    assert float(summary["lesion", "hd95_mm"]["mean"]) == pytest.approx(0.5)
    assert summary["lesion", "dice"]["n"] == "2"
    table = (out / "summary.md").read_text()
    assert "| lesion | 0.750 ± 0.250 | 0.50 ± 0.50 | 0.25 ± 0.25 | 0.0 ± 0.0 |" in table
    assert table in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_another_tools_values_are_matched_to_the_datasets_structures_by_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--pred-labels``: FSL FAST's tissue map (CSF 1, GM 2, WM 3) scored against iSeg's ground
    truth (CSF 10, GM 150, WM 250) gives the table of the same map in iSeg's values; a name the
    ground truth lacks, or a structure the prediction does not name, is one line naming it."""
    truth = sum(blob(seed).astype(np.uint8) for seed in (0, 2, 4))  # classes 0-3, nested blobs
    prediction = sum(blob(seed).astype(np.uint8) for seed in (1, 2, 4))
    iseg = np.array([0, 10, 150, 250], dtype=np.uint8)
    write_pair(tmp_path / "fast", tmp_path / "gt", "subject-9", prediction, iseg[truth])
    write_pair(tmp_path / "ours", tmp_path / "gt", "subject-9", iseg[prediction], iseg[truth])
    assert evaluate.main(["--pred", str(tmp_path / "ours"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg"]) == 0
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "1:csf,2:GM,3:WM"]) == 0
    ours, fast = (read_csv(tmp_path / name / "scores.csv") for name in ("ours", "fast"))
    assert [r["structure"] for r in fast] == ["CSF", "GM", "WM"] and fast == ours
    assert 0 < min(float(r["dice"]) for r in fast) and max(float(r["dice"]) for r in fast) < 1
    capsys.readouterr()
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "1:CSF,2:cortex,3:WM"]) == 2
    assert capsys.readouterr().err == ("evaluate.py: error: --pred-labels names ['cortex'] that the iseg label map "
                                       "does not; the iseg label map names ['GM'] that --pred-labels does not: a "
                                       "prediction's structures are matched to the ground truth's by name\n")
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "CSF,GM"]) == 2
    assert capsys.readouterr().err == "evaluate.py: error: --pred-labels: expected value:name, got 'CSF'\n"
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "1:CSF,1:GM,3:WM"]) == 2
    assert capsys.readouterr().err == "evaluate.py: error: --pred-labels: value 1 is named twice (CSF, GM)\n"
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "1:CSF,2:GM"]) == 2  # WM is never predicted: not scored as missed
    assert "names ['WM'] that --pred-labels does not" in capsys.readouterr().err
    # Named as the tool names them: subject id, then its own suffix; subject-10's never subject-1's, and a file
    # named exactly wins over one named so
    fast_named, gt = tmp_path / "fast_named", tmp_path / "gt3"
    for subject in ("subject-1", "subject-10", "subject-9"):
        write_pair(tmp_path / "unused", gt, subject, prediction, iseg[truth])
        write_nifti(prediction.astype(np.uint8), fast_named / f"{subject}_T1_pveseg.nii.gz", AFFINE)
    write_nifti(prediction.astype(np.uint8), fast_named / "subject-9_seg.nii.gz", AFFINE)
    matching = evaluate.match_folders(fast_named, gt, "iseg")
    assert {s: p.name for s, (p, _) in matching.pairs.items()} == {
        "subject-1": "subject-1_T1_pveseg.nii.gz", "subject-10": "subject-10_T1_pveseg.nii.gz",
        "subject-9": "subject-9_seg.nii.gz"}
    assert [p.name for p in matching.unknown] == ["subject-9_T1_pveseg.nii.gz"]
    write_nifti(prediction.astype(np.uint8), fast_named / "subject-1_T2_pveseg.nii.gz", AFFINE)
    with pytest.raises(evaluate.EvaluationError, match=r"two predictions for subject-1: subject-1_T1_pveseg\.nii\.gz, "
                                                       r"subject-1_T2_pveseg\.nii\.gz"):
        evaluate.match_folders(fast_named, gt, "iseg")
    extra = prediction.copy()
    extra[0, 0, 0] = 7  # a value the tool's table does not name
    write_pair(tmp_path / "fast", tmp_path / "gt", "subject-9", extra, iseg[truth])
    assert evaluate.main(["--pred", str(tmp_path / "fast"), "--gt", str(tmp_path / "gt"), "--dataset", "iseg",
                          "--pred-labels", "1:CSF,2:GM,3:WM", "--overwrite"]) == 2  # (its scores of 1:csf,... there)
    assert capsys.readouterr().err.endswith("subject-9_seg.nii.gz: label values [7] are not among the predictions' "
                                            "named values [0, 1, 2, 3]\n")


def test_the_summary_names_the_runs_that_wrote_the_scored_files(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``summary.md`` says which logged prediction run (checkpoints, settings) wrote the scored
    files; files of two different runs in one folder are said in a warning: their scores are
    pooled in one table."""
    from core.export import PredictionFolder, Segmentation
    from core.io import DataWarning
    from core.labels import LabelSpace

    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2).astype(np.uint8)
    space = LabelSpace.from_values({0: "background", 1: "lesion"})

    def predict(subjects: list[str], record: dict) -> None:
        folder = PredictionFolder(pred_dir, overwrite=True, record=record)
        for subject in subjects:
            write_nifti(truth, gt_dir / f"{subject}_label.nii.gz", AFFINE)
            folder.write(Segmentation(subject, truth.astype(np.int16), AFFINE, space))
        folder.close()

    predict(["s1", "s2"], {"checkpoint": "a.ckpt", "flips": False})
    arguments = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels",
                 "--labels", "0:background,1:lesion"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one run: nothing to warn about
        assert evaluate.main(arguments) == 0
    assert (pred_dir / "summary.md").read_text().endswith("\nPredictions of 2 subjects by a.ckpt (flips False).\n")
    predict(["s2"], {"checkpoint": "b.ckpt", "flips": True})  # s2 segmented again by another model
    capsys.readouterr()
    with pytest.warns(DataWarning, match=r"come from 2 different checkpoints or settings \(a\.ckpt \(flips False\): "
                                         r"1; b\.ckpt \(flips True\): 1 subjects\); their scores are pooled"):
        assert evaluate.main(arguments) == 0
    summary = (pred_dir / "summary.md").read_text()
    assert summary.endswith("\nPredictions of 1 subject by a.ckpt (flips False).\n"
                            "\nPredictions of 1 subject by b.ckpt (flips True).\n")
    assert summary in capsys.readouterr().out
    write_nifti(truth, gt_dir / "s3_label.nii.gz", AFFINE)  # a file no logged run wrote
    write_nifti(truth, pred_dir / "s3_seg.nii.gz", AFFINE)
    with pytest.warns(DataWarning, match="come from 3 different"):
        assert evaluate.main(arguments) == 0
    assert (pred_dir / "summary.md").read_text().endswith(
        "\nPredictions of 1 subject not in the folder's log (written before it, or by another tool).\n")


def test_label_values_outside_the_map_are_refused_on_either_side(tmp_path: Path) -> None:
    """Once, a value outside the label map scored DSC 0 without a word."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2).astype(np.uint8)
    write_pair(pred_dir, gt_dir, "s1", truth * 3, truth)  # prediction written with value 3
    with pytest.raises(evaluate.EvaluationError, match=r"s1_seg\.nii\.gz: label values \[3\] are not in the labels "
                                                       r"label map \[0, 1\]"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:lesion")
    write_pair(pred_dir, gt_dir, "s1", truth, truth * 7)  # ground truth with 7
    with pytest.raises(evaluate.EvaluationError, match=r"s1_label\.nii\.gz: label values \[7\] are not in"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:lesion")
    write_pair(pred_dir, gt_dir, "s1", truth * 10, truth * 9)  # iSeg values; 9 is in no iSeg class
    with pytest.raises(evaluate.EvaluationError, match=r"label values \[9\] are not in the iseg label map"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "iseg")


def test_a_truncated_prediction_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2).astype(np.uint8)
    write_pair(pred_dir, gt_dir, "s1", truth, truth)
    path = pred_dir / "s1_seg.nii.gz"
    path.write_bytes(path.read_bytes()[:60])
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels", "--labels", "1:x"]) == 2
    assert re.search(r"error: .*s1_seg\.nii\.gz: cannot read the label map", capsys.readouterr().err)


def test_the_ground_truth_of_a_nifti_dataset_found_by_its_label_pattern(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder per subject (``sub-01/label.nii.gz``), or per site and patient, as the NIfTI
    DataModule reads it: ``--gt-pattern`` finds its labels under the ids training gave them
    (``siteA_sub-01``); without it the error says the option."""
    nested = write_nifti_folder(tmp_path / "nested")
    sites = tmp_path / "sites"
    for site, subject in (("siteA", "sub-01"), ("siteB", "sub-01"), ("siteB", "sub-10")):
        shutil.copytree(nested / subject, sites / site / subject)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for name, source in (("siteA_sub-01", nested / "sub-01"), ("siteB_sub-10", nested / "sub-10")):
        shutil.copy(source / "label.nii.gz", pred_dir / f"{name}_seg.nii.gz")  # perfect predictions
    shutil.copy(nested / "sub-03" / "label.nii.gz", pred_dir / "siteB_sub-01_seg.nii.gz")  # another subject's
    rows = evaluate.evaluate_matching(pred_dir, sites, "labels", "0:background,1:tissue,2:lesion",
                                      gt_pattern="{site}/{subject}/label.nii.gz")[0]
    dice = {(r["subject"], r["structure"]): r["dice"] for r in rows}
    assert dice[("siteA_sub-01", "lesion")] == dice[("siteB_sub-10", "tissue")] == 1.0
    assert dice[("siteB_sub-01", "lesion")] < 1.0 and len(dice) == 6
    args = ["--pred", str(pred_dir), "--gt", str(sites), "--dataset", "labels", "--labels", "1:tissue,2:lesion"]
    assert evaluate.main(args) == 2
    assert ("no NIfTI files at the top level (dataset 'labels' has no known layout); for a folder per subject give "
            "the files' pattern, as the NIfTI DataModule's label_pattern: --gt-pattern '{subject}/label.nii.gz'"
            in capsys.readouterr().err)
    assert evaluate.main([*args, "--gt-pattern", "{site}/{subject}/seg.nii.gz"]) == 2
    assert f"--gt-pattern: {sites}: no files named like <site>/<subject>/seg.nii.gz" in capsys.readouterr().err
    assert evaluate.main([*args, "--gt-pattern", "{site}/{subject}/label.nii.gz"]) == 0
    assert json.loads((pred_dir / "scoring.json").read_text())["gt_pattern"] == "{site}/{subject}/label.nii.gz"


def test_nan_avd_is_left_out_of_the_mean(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    empty = np.zeros(SHAPE, dtype=np.uint8)
    write_pair(pred_dir, gt_dir, "a", cube((4, 4, 4), 2), empty)  # spurious: AVD NaN
    write_pair(pred_dir, gt_dir, "b", cube((4, 4, 4), 2) | cube((6, 4, 4), 2), cube((4, 4, 4), 2))  # AVD 100
    rows = evaluate.evaluate_folders(pred_dir, gt_dir, "labels", {0: "background", 1: "lesion"})
    assert math.isnan(rows[0]["avd_percent"]) and rows[1]["avd_percent"] == 100.0
    summary = {s["metric"]: s for s in evaluate.summarise(rows)}
    assert summary["avd_percent"]["mean"] == 100.0 and summary["avd_percent"]["n"] == 1
    assert summary["hd95_mm"]["n"] == 2


def test_mismatched_affine_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2)
    write_pair(pred_dir, gt_dir, "s1", truth, truth, pred_affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(evaluate.EvaluationError, match=r"s1_seg\.nii\.gz and .*s1_label\.nii\.gz have different"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "0:background,1:x")
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels", "--labels",
                          "1:x"]) == 2
    assert "different affines" in capsys.readouterr().err


def test_a_truth_stored_in_another_voxel_order_scores_as_the_same_grid(tmp_path: Path) -> None:
    """A ground truth written with its x axis the other way and its axes exchanged (fMRIPrep's RAS
    beside a LAS scan) is the same voxels: the same scores as the truth stored like the
    prediction, distances in mm included; shifted by 2 mm as well, it is an error giving the
    distance in one line."""
    truth = (cube((2, 3, 4), 4) * 1 + cube((9, 9, 9), 3) * 2).astype(np.uint8)
    prediction = (cube((3, 3, 4), 4) * 1 + cube((9, 10, 9), 3) * 2).astype(np.uint8)
    plain, stored = tmp_path / "plain", tmp_path / "stored"
    write_pair(plain / "pred", plain / "gt", "s1", prediction, truth)
    write_pair(stored / "pred", stored / "gt", "s1", prediction, truth)
    flip_swap = np.eye(4)[[1, 0, 2, 3]]  # voxel (i, j, k) of the stored file is (j, i, k) of the plain one
    reordered = truth.transpose(1, 0, 2)[::-1]
    flip_swap = flip_swap @ np.array([[-1.0, 0, 0, reordered.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_nifti(reordered, stored / "gt" / "s1_label.nii.gz", AFFINE @ flip_swap)
    labels = "0:background,1:a,2:b"
    expected = evaluate.evaluate_folders(plain / "pred", plain / "gt", "labels", labels)
    assert evaluate.evaluate_folders(stored / "pred", stored / "gt", "labels", labels) == expected
    assert 0.0 < expected[0]["dice"] < 1.0 and expected[0]["hd95_mm"] > 0
    shifted = AFFINE @ flip_swap
    shifted[2, 3] += 2.0
    write_nifti(reordered, stored / "gt" / "s1_label.nii.gz", shifted)
    with pytest.raises(evaluate.EvaluationError, match=r"s1_seg\.nii\.gz and .*s1_label\.nii\.gz have different "
                                                      r"affines: the same voxel lies up to 2 mm apart$"):
        evaluate.evaluate_folders(stored / "pred", stored / "gt", "labels", labels)


def test_label_maps_are_read_as_training_reads_them_never_rounded_in_silence(tmp_path: Path) -> None:
    """A ground truth stored as scaled floats (0.9999999) is its whole numbers, as the DataModules
    read it; one resampled with linear interpolation (0.5) is an error naming the file, where
    evaluate.py used to round it and score it."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((2, 2, 2), 4)
    write_pair(pred_dir, gt_dir, "s1", truth, truth)
    write_nifti(truth.astype(np.float32) * np.float32(0.9999999), gt_dir / "s1_label.nii.gz", AFFINE)
    (row,) = evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "0:background,1:x")
    assert row["dice"] == 1.0
    blurred = truth.astype(np.float32)
    blurred[1, 2:6, 2:6] = 0.5  # a rim that interpolation made
    write_nifti(blurred, gt_dir / "s1_label.nii.gz", AFFINE)
    with pytest.raises(evaluate.EvaluationError, match=r"s1_label\.nii\.gz: label map has non-integer values in 16 "
                                                      r"voxels \(e\.g\. 0\.5\); .* linear interpolation"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "0:background,1:x")


def test_every_pair_that_cannot_be_scored_is_said_at_once_and_no_table_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three subjects, two with problems (another shape; a value outside the map): one line names
    both, in order, exit 2, and no scores are written for the third alone."""
    pred_dir, gt_dir, out = tmp_path / "pred", tmp_path / "gt", tmp_path / "out"
    write_pair(pred_dir, gt_dir, "s1", cube((2, 2, 2), 4), cube((2, 2, 2), 4))
    write_pair(pred_dir, gt_dir, "s2", np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    write_pair(pred_dir, gt_dir, "s3", cube((2, 2, 2), 4) * 5, cube((2, 2, 2), 4))
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels", "--labels", "1:x",
                          "--output", str(out)]) == 2
    said = capsys.readouterr().err
    assert re.match(r"evaluate\.py: error: 2 of 3 pairs cannot be used: .*s2_seg\.nii\.gz has shape \(4, 4, 4\) but "
                    r".*s2_label\.nii\.gz has \(4, 4, 5\); .*s3_seg\.nii\.gz: label values \[5\] are not in the "
                    r"labels label map \[0, 1\]\n$", said), said
    assert not out.exists()


def test_mismatched_shape_is_a_clear_error(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_pair(pred_dir, gt_dir, "s1", np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(evaluate.EvaluationError, match=r"s1_seg\.nii\.gz has shape \(4, 4, 4\) but .*s1_label"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:x")


def test_the_predicted_subjects_are_scored_and_the_others_listed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The common case (only the test subjects predicted) needs no flag; ``--require-all`` makes a
    subject on one side only an error; a normal run prints no Python warning."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2)
    write_pair(pred_dir, gt_dir, "s1", truth, truth)
    write_nifti(truth.astype(np.uint8), pred_dir / "s2_seg.nii.gz", AFFINE)
    write_nifti(truth.astype(np.uint8), gt_dir / "s3.nii.gz", AFFINE)
    write_nifti(np.zeros((2, 4, 4, 4), np.float32), pred_dir / "s1_probabilities.nii.gz", AFFINE)  # passed over
    (pred_dir / "volumes.csv").write_text("subject\n")
    listed = r"not predicted in .*pred \(1\): s3; no ground truth in .*gt for \(1\): s2_seg\.nii\.gz"
    with pytest.raises(evaluate.EvaluationError, match=listed):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:x", require_all=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:x")
        assert [r["subject"] for r in rows] == ["s1"]
        args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "labels", "--labels", "1:x"]
        assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "scored 1 subject; written to" in out and f"not predicted in {pred_dir} (1): s3" in out
    assert evaluate.main([*args, "--require-all"]) == 2
    assert "(--require-all)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the hidden flag of the old default is gone: said so, exit 2
        evaluate.main([*args, "--allow-missing"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --allow-missing" in capsys.readouterr().err


@pytest.mark.parametrize("naming", ["nnunet", "ground_truth", "ours"])
def test_predictions_are_matched_by_subject_whatever_their_naming(tmp_path: Path, naming: str) -> None:
    """nnU-Net writes ``<case>.nii.gz``; some tools copy the ground truth's file names."""
    folder = write_brats(tmp_path / "data", 2021, cases=2)
    pred_dir = tmp_path / "pred"
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        seg = case / f"{case.name}_seg.nii.gz"
        image = nib.load(str(seg))
        name = {"nnunet": f"{case.name}.nii.gz", "ground_truth": seg.name, "ours": f"{case.name}_seg.nii.gz"}[naming]
        write_nifti(np.asarray(image.dataobj).astype(np.uint8), pred_dir / name, image.affine)
    rows = evaluate.evaluate_folders(pred_dir, folder, "brats", require_all=True)
    assert sorted({r["subject"] for r in rows}) == ["BraTS2021_00000", "BraTS2021_00001"]
    assert all(r["dice"] == 1.0 for r in rows)


def test_two_predictions_of_one_subject_are_an_error(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2)
    write_pair(pred_dir, gt_dir, "s1", truth, truth)
    write_nifti(truth.astype(np.uint8), pred_dir / "s1.nii.gz", AFFINE)
    with pytest.raises(evaluate.EvaluationError, match=r"two predictions for s1: s1\.nii\.gz, s1_seg\.nii\.gz"):
        evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:x")


def test_brats_dataset_folder(tmp_path: Path) -> None:
    """Discovery through BraTSDataModule (one 2020 case with the odd segmentation name);
    the truth as prediction except one case with ET wiped."""
    folder = write_brats(tmp_path / "data", 2020, cases=3)
    pred_dir = tmp_path / "pred"
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        seg = next(p for p in case.iterdir() if "seg" in p.name.lower())
        label = np.asarray(nib.load(str(seg)).dataobj).astype(np.uint8)
        if case.name.endswith("003"):
            label[label == 4] = 1
        write_nifti(label, pred_dir / f"{case.name}_seg.nii.gz", BRATS_AFFINE)
    rows = evaluate.evaluate_folders(pred_dir, folder, "brats")
    assert [(r["subject"], r["structure"]) for r in rows][:3] == [("BraTS20_Training_001", s) for s in
                                                                  ("WT", "TC", "ET")]
    assert len(rows) == 9
    for row in rows:
        wiped = row["subject"].endswith("003") and row["structure"] == "ET"
        assert row["dice"] == (0.0 if wiped else 1.0)
        assert row["avd_percent"] == (100.0 if wiped else 0.0)


def test_brats_post_treatment_folder_scores_the_cavity_apart(tmp_path: Path) -> None:
    """BraTS 2024 post-treatment (2023's names; 1 NETC, 2 SNFH, 3 ET, 4 resection cavity): the
    cavity is a region of its own, outside the whole tumour. One case's cavity predicted as
    oedema: its RC Dice 0, its WT Dice by hand; cases without a cavity that predict none: 1."""
    folder = write_brats(tmp_path / "data", 2024, cases=3)
    pred_dir = tmp_path / "pred"
    expected_wt = {}
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = np.asarray(nib.load(str(case / f"{case.name}-seg.nii.gz")).dataobj).astype(np.uint8)
        tumour, cavity = int(np.isin(label, [1, 2, 3]).sum()), int((label == 4).sum())
        expected_wt[case.name] = 2 * tumour / (2 * tumour + cavity)
        label[label == 4] = 2
        write_nifti(label, pred_dir / f"{case.name}.nii.gz", BRATS_AFFINE)
    rows = evaluate.evaluate_folders(pred_dir, folder, "brats_post_treatment", require_all=True)
    by = {(r["subject"], r["structure"]): r["dice"] for r in rows}
    assert sorted({r["structure"] for r in rows}) == ["ET", "RC", "TC", "WT"] and len(rows) == 12
    for case in ("BraTS-GLI-02000-100", "BraTS-GLI-02002-100"):  # the cases with a cavity
        assert by[case, "RC"] == 0.0 and by[case, "WT"] == pytest.approx(expected_wt[case]) and by[case, "WT"] < 1
        assert by[case, "TC"] == by[case, "ET"] == 1.0
    assert by["BraTS-GLI-02001-100", "RC"] == by["BraTS-GLI-02001-100", "WT"] == 1.0
    # 2023's values scored as 2018-2021's: the enhancing tumour 3 is outside that map, and said whose it is.
    glioma = write_brats(tmp_path / "glioma", 2023, cases=1)
    seg = glioma / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-seg.nii.gz"
    write_nifti(np.asarray(nib.load(str(seg)).dataobj), tmp_path / "pred2023" / "BraTS-GLI-00000-000.nii.gz",
                BRATS_AFFINE)
    with pytest.raises(evaluate.EvaluationError, match=r"label values \[3\] are not in the brats label map "
                                                       r"\[0, 1, 2, 4\] \(its values are those of --dataset "
                                                       r"brats2023 or brats_post_treatment\)"):
        evaluate.evaluate_folders(tmp_path / "pred2023", glioma, "brats")
    assert {r["dice"] for r in evaluate.evaluate_folders(tmp_path / "pred2023", glioma, "brats2023")} == {1.0}


@pytest.mark.parametrize("dataset", ["mrbrains18", "mrbrains18_thesis"])
def test_mrbrains18_dataset_folder(tmp_path: Path, dataset: str) -> None:
    training = write_mrbrains18(tmp_path / "data", ids=("1", "070"), shape=(16, 16, 10))
    pred_dir = tmp_path / "pred"
    for subject in ("1", "070"):
        label = np.asarray(nib.load(str(training / subject / "segm.nii.gz")).dataobj).astype(np.uint8)
        label[(label == 9) | (label == 10)] = 3  # ignored voxels, wrongly predicted
        write_nifti(label, pred_dir / f"{subject}_seg.nii.gz", np.diag([*MRBRAINS_ZOOMS, 1.0]))
    rows = evaluate.evaluate_folders(pred_dir, training, dataset)
    names = DATASET_LABELS[dataset].structure_names
    assert [r["subject"] for r in rows] == ["1"] * len(names) + ["070"] * len(names)
    assert all(r["dice"] == 1.0 and r["hd95_mm"] == 0.0 for r in rows)


def test_flat_truth_accepts_the_prediction_naming(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    truth = cube((4, 4, 4), 2)
    write_pair(pred_dir, gt_dir, "s1", truth, truth)
    shutil.move(gt_dir / "s1_label.nii.gz", gt_dir / "s1_seg.nii.gz")
    rows = evaluate.evaluate_folders(pred_dir, gt_dir, "labels", "1:x")
    assert rows[0]["dice"] == 1.0


def test_iseg_dataset_folder(iseg_dir: Path) -> None:
    """Analyze ground truth found by ISeg2017DataModule; one subject's WM called GM."""
    pred_dir = iseg_dir.parent / "pred"
    for n in (1, 2, 3, 4, 10):
        image = nib.load(str(iseg_dir / f"subject-{n}-label.hdr"))
        label = np.asarray(image.dataobj).astype(np.uint8)
        if n == 10:
            label[label == 250] = 150
        write_nifti(label, pred_dir / f"subject-{n}_seg.nii.gz", image.affine)
    rows = evaluate.evaluate_folders(pred_dir, iseg_dir, "iseg", require_all=True)  # images are not subjects
    assert [r["subject"] for r in rows[::3]] == [f"subject-{n}" for n in (1, 2, 3, 4, 10)]
    by_key = {(r["subject"], r["structure"]): r for r in rows}
    assert by_key["subject-10", "WM"]["dice"] == 0.0 and by_key["subject-10", "CSF"]["dice"] == 1.0
    assert 0 < by_key["subject-10", "GM"]["dice"] < 1 and by_key["subject-1", "WM"]["dice"] == 1.0
