"""Per-case CPU inference: ``predict.py`` with the checkpoint's settings against ``--cpu-fast``.

    python -m benchmarks.cpu_inference [--flips]

Two cases, each an untrained 3D U-Net checkpoint of the demo's width (base 8, 48³ windows,
overlap 0.5, 4 windows a pass) and synthetic scans at full size: an iSeg-2017 case (T1 + T2,
144 x 192 x 256) and a BraTS case (T1, T1ce, T2, FLAIR, 240 x 240 x 155). Each setting runs
``predict.predict`` in a fresh process (torch's default threads, or every core with the preset)
and prints the wall time of the call: read, preprocess, windows, write. ``--flips`` adds the
8-mirroring test-time augmentation (8x the windows; minutes on a CPU). ``cpu-fast fp32`` is the
preset without bfloat16, to show what bf16 adds on a CPU that has it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from benchmarks.inference_speed import make_checkpoint
from benchmarks.loader_throughput import ISEG_SHAPE, write_subject
from core.checkpoint import write_checkpoint
from core.dataset_labels import BRATS_REGIONS
from lightning_modules import SegmentationModule

BRATS_SHAPE = (240, 240, 155)
BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")


def brats_case(folder: Path) -> list[Path]:
    """Four modalities of a ball-shaped 'brain' with a smaller 'tumour', as float32 NIfTI."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in BRATS_SHAPE], indexing="ij"))
    brain, tumour = (grid ** 2).sum(0) < 0.8, ((grid - 0.2) ** 2).sum(0) < 0.05
    paths = []
    for n, modality in enumerate(BRATS_MODALITIES):
        image = np.where(brain, 500.0 + 100 * n + rng.normal(0, 30, BRATS_SHAPE), 0.0).astype(np.float32)
        image[tumour] += 300
        paths.append(folder / f"case_{modality}.nii.gz")
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(paths[-1]))
    return paths


def brats_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = SegmentationModule("unet3d", {"base_features": 8}, in_channels=4, label_space=BRATS_REGIONS.to_dict(),
                               modalities=list(BRATS_MODALITIES), roi_size=(48, 48, 48), sw_batch_size=4,
                               sw_overlap=0.5)
    write_checkpoint(path, model.state_dict(), model.hparams, "datamodules.BraTSDataModule",
                     {"modalities": ["T1", "T1ce", "T2", "FLAIR"]})


def child(checkpoint: str, output: str, setting: str, inputs: list[str]) -> None:
    import predict

    kwargs: dict = {}
    if setting.startswith("cpu-fast"):
        torch.set_num_threads(os.cpu_count() or 1)
        kwargs = predict.cpu_fast(precision="32" if setting == "cpu-fast fp32" else None)
    start = time.perf_counter()
    predict.predict(Path(checkpoint), [Path(p) for p in inputs], Path(output), "cpu", flips=setting == "flips",
                    **kwargs)
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flips", action="store_true", help="also time 8-mirroring test-time augmentation")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.child[3:])
        return
    root = Path(__file__).resolve().parent.parent
    settings = ["checkpoint's", *(["flips"] if args.flips else []), "cpu-fast fp32", "cpu-fast"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "iseg").mkdir()
        write_subject(tmp / "iseg", 1, ISEG_SHAPE)
        make_checkpoint(tmp / "iseg.ckpt", 8, 48, 0.5, 4)
        (tmp / "brats").mkdir()
        cases = {"iSeg-2017 144x192x256, 2 modalities": (tmp / "iseg.ckpt", [tmp / "iseg" / f"subject-1-{m}.hdr"
                                                                             for m in ("T1", "T2")]),
                 "BraTS 240x240x155, 4 modalities": (tmp / "brats.ckpt", brats_case(tmp / "brats"))}
        brats_checkpoint(tmp / "brats.ckpt")
        print("| case | setting | seconds | threads |\n|---|---|---:|---:|")
        for case, (checkpoint, inputs) in cases.items():
            for n, setting in enumerate(settings):
                command = [sys.executable, "-m", "benchmarks.cpu_inference", "--child", str(checkpoint),
                           str(tmp / f"out-{case[:4]}-{n}"), setting, *map(str, inputs)]
                done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {case} | {setting} | {result['seconds']:.1f} | {result['threads']} |", flush=True)


if __name__ == "__main__":
    main()
