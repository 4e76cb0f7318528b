"""What ``crop_to_nonzero`` saves on scans of BraTS' size: ``predict.py --cpu-fast`` on one case of
240x240x155 voxels and 4 modalities, by a model trained with the crop and by the same model
trained without it, one after the other.

    python -m benchmarks.crop_speed [--out /tmp/crop_speed]

The cases are the real ICBM152 brain (nilearn's template, skull-stripped, 1 mm) placed in a BraTS
grid as the SRI24 atlas places a brain, with four contrasts made from its T1 and an ellipsoid
tumour (oedema, core, enhancing rim). Each model is the demo's U-Net trained for one step through
``train.py`` with ``configs/datasets/brats.yaml`` and ``--data.init_args.crop_to_nonzero true``
or ``false``: prediction time does not depend on the weights. The
figures are the whole command (start-up, reading, preprocessing, windows, writing) and the share
of the grid the crop keeps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent
BRATS_SHAPE = (240, 240, 155)
SUFFIXES = ("t1", "t1ce", "t2", "flair")


def icbm_brain() -> np.ndarray:
    """The ICBM152 2009 T1 template (skull-stripped) that nilearn ships, float32."""
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def write_cases(folder: Path, cases: int = 3) -> list[Path]:
    """BraTS 2021-style case folders (``<case>/<case>_t1.nii.gz``, ..., ``_seg``)."""
    from core.volumes import nonzero_box

    t1 = icbm_brain()
    box = nonzero_box(t1[None])
    brain = t1[box]
    grid = np.zeros(BRATS_SHAPE, dtype=np.float32)
    start = [(g - b) // 2 for g, b in zip(BRATS_SHAPE, brain.shape, strict=True)]
    place = tuple(slice(s, s + n) for s, n in zip(start, brain.shape, strict=True))
    grid[place] = brain
    inside = grid > 0
    axes = np.ogrid[tuple(slice(0, n) for n in BRATS_SHAPE)]
    folders = []
    for case in range(cases):
        centre = np.array([100 + 15 * case, 130, 80])
        distance = sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, (22, 18, 16), strict=True))
        label = np.zeros(BRATS_SHAPE, dtype=np.uint8)
        label[(distance < 1) & inside] = 2
        label[(distance < 0.45) & inside] = 4
        label[(distance < 0.25) & inside] = 1
        contrasts = {"t1": grid, "t1ce": np.where(label == 4, 1.6 * grid, grid),
                     "t2": np.where(inside, grid.max() - grid + 10, 0), "flair": np.where(label == 2, 1.5 * grid, grid)}
        name = f"BraTS2021_{case:05d}"
        folders.append(folder / name)
        folders[-1].mkdir(parents=True, exist_ok=True)
        for suffix in SUFFIXES:
            nib.save(nib.Nifti1Image(contrasts[suffix].astype(np.float32), np.eye(4)),
                     folders[-1] / f"{name}_{suffix}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), folders[-1] / f"{name}_seg.nii.gz")
    return folders


def train_one_step(data: Path, out: Path, crop: bool) -> Path:
    run = out / ("cropped" if crop else "whole")
    subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", "configs/datasets/brats.yaml",
                    "--data.init_args.data_dir", str(data), "--data.init_args.crop_to_nonzero", str(crop).lower(),
                    "--data.init_args.patch_size", "[48, 48, 48]", "--data.init_args.batch_size", "1",
                    "--data.init_args.num_workers", "0", "--data.init_args.cache_dir", str(run / "cache"),
                    "--model.network", "unet3d", "--model.network_kwargs", "{base_features: 8}",
                    "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
                    "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(run / "checkpoints")],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return run / "checkpoints" / "last.ckpt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/crop_speed"), help="a new folder for everything")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new folder")
    from core.volumes import nonzero_box

    cases = write_cases(args.out / "BraTS2021")
    checkpoints = {crop: train_one_step(args.out / "BraTS2021", args.out, crop) for crop in (True, False)}
    case = cases[-1]
    files = [str(case / f"{case.name}_{s}.nii.gz") for s in SUFFIXES]
    image = np.stack([np.asarray(nib.load(f).dataobj) for f in files])
    box = nonzero_box(image)
    kept = np.prod([s.stop - s.start for s in box]) / np.prod(BRATS_SHAPE)
    print(f"case {case.name}: box {[s.stop - s.start for s in box]} of {list(BRATS_SHAPE)} = {kept:.1%} of the grid")
    for crop in (False, True, False):
        output = args.out / f"predictions-{'cropped' if crop else 'whole'}-{time.time_ns()}"
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "predict.py"), "--checkpoint", str(checkpoints[crop]),
                        "--input", *files, "--output", str(output), "--cpu-fast"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        written = nib.load(output / f"{case.name}_seg.nii.gz")
        assert written.shape == BRATS_SHAPE, written.shape
        print(f"predict.py --cpu-fast, model trained {'with' if crop else 'without'} the crop: {seconds:.1f} s "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
