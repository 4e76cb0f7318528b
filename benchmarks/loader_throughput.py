"""Does the training loader keep up with training? Patches per second, side by side in one run.

    python -m benchmarks.loader_throughput [--subjects 4] [--workers 2] [--batches 30] [--steps 2]

Writes ``--subjects`` synthetic iSeg-2017 subjects at the real size (144 x 192 x 256, int16
Analyze pairs, T1 + T2) into a temporary folder, then measures, one after the other:

- preprocessing: ``prepare_data`` (read, check, reorient, z-score, write the disk cache), once;
- loader: patches per second delivered by ``ISeg2017DataModule.train_dataloader()`` with
  ``--workers`` workers reading the memory-mapped cache, at the thesis' U-Net patch
  (64 x 128 x 128, batch 1): without augmentation and with each ``--augmentation`` config
  (default ``configs/augmentation/standard.yaml``).
  Timed over ``--batches`` batches after the first (worker start-up excluded);
- step: patches per second one training step of the thesis' 3D U-Net (base 32 features, 2
  channels, 4 classes, Dice + CE, SGD) consumes on this machine, fp32, after one warm-up step.

The ratio loader / step says how many times over the loader could feed the training; the
target is at least 3. Loader and step are timed separately, so the loader's workers do not
compete with the step for the same cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

from core.dataset_labels import ISEG
from datamodules import ISeg2017DataModule
from lightning_modules import SegmentationModule

ISEG_SHAPE = (144, 192, 256)
THESIS_PATCH = (64, 128, 128)


def write_subject(folder: Path, n: int, shape: tuple[int, int, int]) -> None:
    """Nested ellipsoids (CSF, GM, WM) with noisy tissue intensities, as int16 Analyze pairs."""
    rng = np.random.default_rng(n)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0)) * (1 + 0.05 * rng.standard_normal())
    label = np.select([radius < 0.45, radius < 0.7, radius < 0.85], [250, 150, 10], 0).astype(np.uint8)
    for name, means in (("T1", {10: 300, 150: 600, 250: 900}), ("T2", {10: 900, 150: 600, 250: 400})):
        image = np.zeros(shape, np.float32)
        for value, mean in means.items():
            image[label == value] = mean
        image[label > 0] += rng.normal(0, 30, int((label > 0).sum()))
        nib.save(nib.AnalyzeImage(np.clip(image, 0, None).astype(np.int16), np.eye(4)),
                 str(folder / f"subject-{n}-{name}.hdr"))
    nib.save(nib.AnalyzeImage(label, np.eye(4)), str(folder / f"subject-{n}-label.hdr"))


def loader_rate(data_dir: Path, cache_dir: Path, workers: int, batches: int, augmentation: list | None) -> float:
    """Patches per second from the training loader (first batch excluded)."""
    dm = ISeg2017DataModule(str(data_dir), patch_size=THESIS_PATCH, batch_size=1, samples_per_volume=1000,
                            num_workers=workers, augmentation=augmentation, cache_dir=str(cache_dir))
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    elapsed = time.perf_counter() - start
    assert batch["image"].shape == (1, 2, *THESIS_PATCH)
    del loader
    return batches / elapsed


def step_rate(steps: int) -> float:
    """Patches per second consumed by training steps of the thesis' 3D U-Net (batch 1)."""
    torch.manual_seed(0)
    model = SegmentationModule("unet3d", {"base_features": 32}, in_channels=2, label_space=ISEG.to_dict(),
                               loss="dice_ce")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    image = torch.randn(1, 2, *THESIS_PATCH)
    label = torch.randint(0, 4, (1, 1, *THESIS_PATCH))

    def step() -> None:
        optimizer.zero_grad()
        model.training_losses(image, label)["loss"].backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--augmentation", nargs="+", default=["configs/augmentation/standard.yaml"],
                        help="augmentation configs to measure, one row each (e.g. also "
                             "configs/augmentation/nnunet.yaml)")
    args = parser.parse_args()
    augmentations = {Path(p).stem: yaml.safe_load(Path(p).read_text())["data"]["init_args"]["augmentation"]
                     for p in args.augmentation}

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, cache_dir = Path(tmp) / "iSeg-2017-Training", Path(tmp) / "cache"
        data_dir.mkdir()
        for n in range(1, args.subjects + 1):
            write_subject(data_dir, n, ISEG_SHAPE)
        start = time.perf_counter()
        ISeg2017DataModule(str(data_dir), cache_dir=str(cache_dir)).prepare_data()
        preprocessing = time.perf_counter() - start
        plain = loader_rate(data_dir, cache_dir, args.workers, args.batches, None)
        augmented = {name: loader_rate(data_dir, cache_dir, args.workers, args.batches, specs)
                     for name, specs in augmentations.items()}
    step = step_rate(args.steps)

    print(f"{args.subjects} subjects {'x'.join(map(str, ISEG_SHAPE))}, 2 modalities; patch "
          f"{'x'.join(map(str, THESIS_PATCH))}, batch 1; torch threads {torch.get_num_threads()}")
    print(f"preprocessing + cache: {preprocessing:.1f} s ({preprocessing / args.subjects:.2f} s per subject)")
    print("| what | patches/s | vs. U-Net step |")
    print("|---|---:|---:|")
    print(f"| loader, {args.workers} workers, no augmentation | {plain:.2f} | {plain / step:.1f}x |")
    for name, rate in augmented.items():
        print(f"| loader, {args.workers} workers, {name} augmentation | {rate:.2f} | {rate / step:.1f}x |")
    print(f"| 3D U-Net training step (base 32, fp32) | {step:.3f} | 1x |")


if __name__ == "__main__":
    main()
