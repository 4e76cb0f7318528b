"""Lesion-wise Dice and HD95 as BraTS ranks from 2023 on (core.lesions, evaluate.py --lesion-wise):
hand-computed cases, agreement with a literal full-volume rendering of the published procedure,
and the command line."""

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import BRATS_AFFINE, write_brats, write_nifti
from scipy import ndimage

import evaluate
from core.lesions import LESION_RULES, MISSED_HD95, LesionRule, lesion_scores
from core.metrics import surface_distances

GLI = LESION_RULES["BraTS-GLI"]  # lesions within 3 voxels as one, above 50 mm³
SHAPE = (40, 40, 40)


def cube(corner: tuple[int, int, int], side: int, mask: np.ndarray | None = None) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool) if mask is None else mask
    x, y, z = corner
    mask[x:x + side, y:y + side, z:z + side] = True
    return mask


def test_lesions_by_hand() -> None:
    truth = cube((30, 30, 30), 3, cube((5, 5, 5), 4))  # lesion A: 64 voxels; B: 27, under GLI's 50 mm³
    found_a_and_a_stray_blob = cube((20, 5, 30), 2, cube((5, 5, 5), 4))
    scores = lesion_scores(found_a_and_a_stray_blob, truth, (1, 1, 1), GLI)
    # A found exactly (Dice 1, HD95 0); B left out; the stray blob a false positive (0, 374 mm).
    assert (scores.lesions, scores.detected, scores.missed, scores.false_positives) == (1, 1, 0, 1)
    assert scores.dice == pytest.approx(1 / 2) and scores.hd95 == pytest.approx(MISSED_HD95 / 2)
    every_size = lesion_scores(found_a_and_a_stray_blob, truth, (1, 1, 1), LesionRule(3, 0.0))
    assert (every_size.lesions, every_size.missed) == (2, 1)  # B counted, and missed
    assert every_size.dice == pytest.approx(1 / 3) and every_size.hd95 == pytest.approx(2 * MISSED_HD95 / 3)
    # Two cubes 2 voxels apart are one lesion at GLI's growth of 3: finding one half gives 2*64/(64+128).
    pair = cube((5, 11, 5), 4, cube((5, 5, 5), 4))
    half = lesion_scores(cube((5, 5, 5), 4), pair, (1, 1, 1), GLI)
    assert (half.lesions, half.detected, half.false_positives) == (1, 1, 0) and half.dice == pytest.approx(2 / 3)
    apart = lesion_scores(cube((5, 5, 5), 4), pair, (1, 1, 1), LesionRule(0, 0.0))  # no growth: two lesions
    assert (apart.lesions, apart.detected, apart.missed) == (2, 1, 1) and apart.dice == pytest.approx(1 / 2)
    # A prediction beside a lesion (1 voxel gap), within its reach: a detection of Dice 0, not a false positive.
    beside = lesion_scores(cube((5, 10, 5), 4), cube((5, 5, 5), 4), (1, 1, 1), GLI)
    assert (beside.detected, beside.false_positives, beside.dice) == (1, 0, 0.0) and 0 < beside.hd95 < 10
    # The volume rule in mm³: the 64-voxel lesion at 0.5 mm is 8 mm³, left out; the blob is still a false positive.
    small = lesion_scores(found_a_and_a_stray_blob, truth, (0.5, 0.5, 0.5), GLI)
    assert (small.lesions, small.false_positives, small.dice, small.hd95) == (0, 1, 0.0, MISSED_HD95)
    nothing = np.zeros(SHAPE, dtype=bool)
    assert lesion_scores(nothing, nothing, (1, 1, 1), GLI).dice == 1.0  # no lesion, none predicted
    assert lesion_scores(nothing, truth, (1, 1, 1), GLI).hd95 == MISSED_HD95


def published_procedure(prediction: np.ndarray, truth: np.ndarray, rule: LesionRule) -> tuple:
    """The procedure as published (BraTS-2023-Metrics), step by step on whole volumes: the
    reference the cropped implementation must equal."""
    s26, s18 = ndimage.generate_binary_structure(3, 3), ndimage.generate_binary_structure(3, 2)
    truth_cc, pred_cc = ndimage.label(truth, s26)[0], ndimage.label(prediction, s26)[0]
    grown_cc = ndimage.label(ndimage.binary_dilation(truth, s18, iterations=rule.dilation), s26)[0]
    lesions = np.zeros_like(grown_cc)
    for grown in range(1, grown_cc.max() + 1):
        lesions[((grown_cc == grown) * truth_cc) > 0] = grown
    matched_all, kept = [], []
    for lesion in range(1, lesions.max() + 1):
        mask = lesions == lesion
        reach = ndimage.binary_dilation(mask, s18, iterations=rule.dilation)
        matched = [c for c in np.unique(pred_cc * reach) if c != 0]
        matched_all += matched
        found = np.isin(pred_cc, matched)
        dice = 2 * (found & mask).sum() / (found.sum() + mask.sum())
        hd95 = surface_distances(found, mask, (1, 1, 1))[0] if found.any() else MISSED_HD95
        if mask.sum() > rule.min_volume_mm3:
            kept.append((dice, hd95))
    false_positives = len(set(np.unique(pred_cc).tolist()) - set(matched_all) - {0})
    total = len(kept) + false_positives
    if total == 0:
        return 1.0, 0.0, 0, 0
    return (sum(d for d, _ in kept) / total, (sum(h for _, h in kept) + MISSED_HD95 * false_positives) / total,
            len(kept), false_positives)


@pytest.mark.parametrize("rule", ["BraTS-GLI", "BraTS-MET"])
def test_the_same_as_the_published_procedure_on_random_lesions(rule: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(6):
        truth = ndimage.gaussian_filter(rng.random((40, 40, 32)), 2) > 0.56
        prediction = ndimage.gaussian_filter(rng.random((40, 40, 32)), 2) > 0.56
        prediction |= ndimage.binary_erosion(truth) & (rng.random(truth.shape) > 0.3)
        ours = lesion_scores(prediction, truth, (1, 1, 1), LESION_RULES[rule])
        dice, hd95, lesions, false_positives = published_procedure(prediction, truth, LESION_RULES[rule])
        assert (ours.lesions, ours.false_positives) == (lesions, false_positives) and lesions + false_positives > 2
        assert ours.dice == pytest.approx(dice, abs=1e-12) and ours.hd95 == pytest.approx(hd95, abs=1e-9)


def test_evaluate_py_lesion_wise_on_a_brats_2023_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The ground truth as prediction, plus a stray enhancing blob in one case: lesion-wise Dice 1
    except in that case, where the blob is a false positive of ET, TC and WT alike (it lies in all
    three) and each one's Dice halves: one lesion found, one spurious."""
    folder = write_brats(tmp_path / "data", 2023, cases=2)
    pred_dir = tmp_path / "pred"
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = np.asarray(nib.load(str(case / f"{case.name}-seg.nii.gz")).dataobj).astype(np.uint8)
        if case.name.endswith("00001-000"):
            assert not label[0:2, 0:2, 0:2].any()
            label[0:2, 0:2, 0:2] = 3
        write_nifti(label, pred_dir / f"{case.name}.nii.gz", BRATS_AFFINE)
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(folder), "--dataset", "brats2023",
                          "--lesion-wise", "BraTS-GLI", "--output", str(tmp_path / "scores")]) == 0
    with open(tmp_path / "scores" / "scores.csv") as handle:
        rows = {(r["subject"], r["structure"]): r for r in csv.DictReader(handle)}
    for structure in ("WT", "TC", "ET"):
        stray, clean = rows["BraTS-GLI-00001-000", structure], rows["BraTS-GLI-00000-000", structure]
        assert float(stray["lesion_dice"]) == 0.5 and float(stray["lesion_hd95_mm"]) == MISSED_HD95 / 2
        assert [stray[c] for c in ("lesions", "detected", "missed", "false_positives")] == ["1", "1", "0", "1"]
        assert float(clean["lesion_dice"]) == float(clean["dice"]) == 1.0 and clean["false_positives"] == "0"
    assert float(rows["BraTS-GLI-00001-000", "ET"]["dice"]) < 1  # the volume-wise Dice sees the blob too
    printed = capsys.readouterr().out
    assert "Lesion-wise, BraTS-GLI (lesions within 3 voxels as one, above 50 mm³):" in printed
    assert "| ET | 0.750 ± 0.250 | 93.50 ± 93.50 | 2 | 2 | 0 | 1 |" in printed
    assert printed == (tmp_path / "scores" / "summary.md").read_text() + (
        "scored 2 subjects; written to " f"{tmp_path / 'scores'}/scores.csv, summary.csv, summary.md\n")


def test_a_rule_of_ones_own_for_lesions_of_other_kinds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--lesion-wise DILATION:MIN_VOLUME``: lesions of another kind (here value 1 of a plain
    NIfTI folder) under a rule of one's own; a malformed rule is one line, exit 2."""
    truth = cube((30, 30, 30), 3, cube((5, 5, 5), 4)).astype(np.uint8)
    prediction = cube((5, 5, 5), 4).astype(np.uint8)
    write_nifti(truth, tmp_path / "gt" / "s1.nii.gz")
    write_nifti(prediction, tmp_path / "pred" / "s1.nii.gz")
    common = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--dataset", "labels",
              "--labels", "0:background,1:lesion", "--output", str(tmp_path / "scores")]
    assert evaluate.main([*common, "--lesion-wise", "0:10"]) == 0  # both cubes counted: one found, one missed
    with open(tmp_path / "scores" / "scores.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (float(row["lesion_dice"]), row["lesions"], row["missed"]) == (0.5, "2", "1")
    assert "Lesion-wise, 0:10 (lesions within 0 voxels as one, above 10 mm³):" in capsys.readouterr().out
    for bad in ("BraTS-XYZ", "1:", "a:b", "1:-5"):
        with pytest.raises(SystemExit) as exited:
            evaluate.main([*common, "--lesion-wise", bad])
        assert exited.value.code == 2
        assert f"lesion rule {bad!r}: a challenge (BraTS-GLI, " in capsys.readouterr().err
