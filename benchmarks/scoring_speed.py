"""Seconds ``evaluate.py`` takes to score BraTS-size cases, so that a change that slows scoring
shows in a number.

Writes ``--cases`` synthetic cases of a BraTS 2023 folder (240 x 240 x 155 at 1 mm: four
empty images and a label map of a few nested tumours, NETC 1 inside ET 3 inside SNFH 2) and a
prediction of each (the truth with its borders perturbed), then scores them as ``evaluate.py
--dataset brats2023`` does, volume-wise and with ``--lesion-wise BraTS-GLI``, in this process
(imports excluded) and once as a command (imports included).

    python -m benchmarks.scoring_speed [--cases 3] [--out /tmp/scoring]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

import evaluate
from evaluate import evaluate_matching, match_folders

SHAPE = (240, 240, 155)
MODALITIES = ("t1n", "t1c", "t2w", "t2f")


def tumours(rng: np.random.Generator, count: int = 3) -> np.ndarray:
    """A BraTS 2023 label map: ``count`` tumours, each oedema around enhancing tissue around a core."""
    grid = np.indices(SHAPE, dtype=np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    for _ in range(count):
        centre = rng.uniform([60, 60, 40], [180, 180, 115])
        radius = rng.uniform(8, 25)
        distance = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))
        for value, scale in ((2, 1.0), (3, 0.6), (1, 0.35)):
            label[distance < radius * scale] = value
    return label


def perturbed(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The label map with 30 % of the voxels within 2 of a tumour border flipped (to background or oedema)."""
    inside = label > 0
    border = ndimage.binary_dilation(inside, iterations=2) & ~ndimage.binary_erosion(inside, iterations=2)
    flip = border & (rng.random(SHAPE) < 0.3)
    out = label.copy()
    out[flip] = np.where(label[flip] > 0, 0, 2)
    return out


def write_cases(out: Path, cases: int, seed: int = 0) -> tuple[Path, Path]:
    """The truth folder (BraTS 2023 layout) and the prediction folder (``<case>.nii.gz``)."""
    rng = np.random.default_rng(seed)
    truth, predictions = out / "truth", out / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    empty = np.zeros(SHAPE, dtype=np.int16)
    for n in range(cases):
        case = f"BraTS-GLI-{n:05d}-000"
        folder = truth / case
        folder.mkdir(parents=True, exist_ok=True)
        label = tumours(rng)
        for modality in MODALITIES:
            nib.save(nib.Nifti1Image(empty, affine), str(folder / f"{case}-{modality}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(folder / f"{case}-seg.nii.gz"))
        nib.save(nib.Nifti1Image(perturbed(label, rng), affine), str(predictions / f"{case}.nii.gz"))
    return truth, predictions


def timed(function: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where to write the cases (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="scoring_speed_"))
    seconds, (truth, predictions) = timed(write_cases, out, args.cases)
    print(f"{args.cases} cases of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} written in {seconds:.1f} s ({out})")
    match_folders(predictions, truth, "brats2023")  # the layout's imports (Lightning), before timing
    seconds, (rows, _) = timed(evaluate_matching, predictions, truth, "brats2023", progress=False)
    print(f"volume-wise: {seconds:.2f} s ({seconds / args.cases:.2f} s a case; {len(rows)} rows)")
    seconds, _ = timed(evaluate_matching, predictions, truth, "brats2023", progress=False, lesion_rule="BraTS-GLI")
    print(f"with --lesion-wise BraTS-GLI: {seconds:.2f} s ({seconds / args.cases:.2f} s a case)")
    script = Path(evaluate.__file__).resolve()  # the evaluate.py imported above, whichever tree it is in
    command = [sys.executable, str(script), "--pred", str(predictions), "--gt", str(truth), "--dataset", "brats2023"]
    seconds, done = timed(subprocess.run, command, cwd=script.parent, capture_output=True)
    status = "" if done.returncode == 0 else f" (exit {done.returncode})"
    print(f"evaluate.py as a command, imports included: {seconds:.2f} s{status}")


if __name__ == "__main__":
    main()
