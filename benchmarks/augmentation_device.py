"""Patches per second of a training augmentation on the CPU (one loader worker's share) and on the
GPU (``augment_on: device``), to see which keeps up with the training step.

    python -m benchmarks.augmentation_device [--config configs/augmentation/nnunet.yaml] [--patch 128 128 128]

One synthetic 2-modality patch batch (brain-like: a z-scored ellipsoid, background 0, labels
0-3) is augmented
- patch by patch (``augment(image, label, rng)``, the DataLoader workers' path) on the CPU with
  one thread, what a worker has;
- as one batch (``augment.batch``, the ``augment_on: device`` path) on the CPU with every thread
  and, where there is a GPU, on CUDA, with the patch-by-patch path there too for comparison.
Every step of the list fires with its configured probability; the figure is the median over
``--batches`` batches after one warm-up batch. Compare the patches/s with the training step's
samples/s (``benchmarks/gpu_fast_path.py``): a loader of N workers delivers about N times the
first row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from datamodules.augmentation import build_augmentation


def synthetic_batch(batch: int, patch: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 2, ...) z-scored inside an ellipsoid (0 outside), labels (B, 1, ...) 0-3."""
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in patch], indexing="ij"))
    radius = (grid**2).sum(0).sqrt()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((batch, 2, *patch), generator=generator) * (radius < 0.9)
    label = 3 - torch.bucketize(radius, torch.tensor([0.3, 0.6, 0.9]))  # 3 at the centre, 0 outside: 4 classes
    label = label.expand(batch, 1, *patch).clone()
    return image.to(device), label.to(device)


def patches_per_second(specs: list[dict], batch: int, patch: tuple[int, int, int], device: torch.device,
                       batches: int, batched: bool) -> float:
    augment = build_augmentation(specs)
    image, label = synthetic_batch(batch, patch, device)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(batches + 1):
        start = time.perf_counter()
        if batched:
            augment.batch(image, label, rng, classes=4)
        for i in range(0 if batched else batch):
            augment(image[i], label[i], rng)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[1:])


def synchronisations(specs: list[dict], batch: int, patch: tuple[int, int, int]) -> str:
    """Whether ``augment.batch`` makes the host wait for the GPU (``torch.cuda.set_sync_debug_mode``):
    'none', or the first synchronising call. A wait stalls the training loop's queue."""
    augment = build_augmentation(specs)
    image, label = synthetic_batch(batch, patch, torch.device("cuda"))
    rng = np.random.default_rng(1)
    augment.batch(image, label, rng, classes=4)  # first call: pinned buffers allocated, kernels loaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            augment.batch(image, label, rng, classes=4)
        return "none"
    except RuntimeError as error:
        return str(error).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/augmentation/nnunet.yaml"))
    parser.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args(argv)
    specs = yaml.safe_load(args.config.read_text())["data"]["init_args"]["augmentation"]
    patch = tuple(args.patch)
    print(f"{args.config} ({', '.join(s['name'] for s in specs)}), patch {patch}, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.2f}")
    threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    torch.set_num_threads(1)
    rows = [("CPU, 1 thread, patch by patch (one loader worker)",
             patches_per_second(specs, args.batch, patch, cpu, args.batches, batched=False))]
    torch.set_num_threads(threads)
    rows.append((f"CPU, {threads} threads, batched", patches_per_second(specs, args.batch, patch, cpu, args.batches,
                                                                        batched=True)))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for batched in (False, True):
            rows.append((f"CUDA ({name}), {'batched (augment_on: device)' if batched else 'patch by patch'}",
                         patches_per_second(specs, args.batch, patch, torch.device("cuda"), args.batches, batched)))
    print("| where | patches/s |\n|---|---|")
    for where, rate in rows:
        print(f"| {where} | {rate:.1f} |")
    if torch.cuda.is_available():
        print(f"batched path, host waits for the GPU: {synchronisations(specs, args.batch, patch)}")


if __name__ == "__main__":
    main()
