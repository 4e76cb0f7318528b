"""Size, compute and CPU training cost of every registered network, as one Markdown table.

    python -m benchmarks.model_table [--networks a,b] [--step-size 64] [--skip-step] [--output FILE] [--threads N]

What each column measures, and why this way:

- params (M): parameters at each network's default constructor arguments (the papers' settings) with
  2 input channels (iSeg T1+T2) and 4 classes, for every network. The thesis' counts (its Table 1) stand
  beside them; the thesis' V-Net took 1 channel, which changes only its first convolution (negligible).
  One extra row gives the thesis' 3-stream early-fusion DenseNet (3 input channels).
- GMAC: multiply-accumulates of one eval-mode forward pass of batch 1, counted by torch's
  ``FlopCounterMode`` (MACs = FLOPs / 2: convolutions and matrix products; norms and activations are not
  counted). Networks are built and run on the ``meta`` device, which computes shapes only, so even the
  largest cost neither memory nor time. The patch is the thesis' iSeg patch, 128x128x64, except for the
  unpadded DenseNet family, which the thesis trains on 32^3 sub-volumes (their output is 9 voxels smaller
  on each side).
- step (s), step +RSS (GiB): one training step on this CPU, fp32, batch 1, an S^3 patch (default 64),
  2 input channels (3 for the 3-stream row), 4 classes: ``SegmentationModule.training_losses`` (the
  training loss with deep-supervision heads, VAE regulariser and unpadded networks' target cropping),
  ``backward`` and an SGD step (lr 1e-3, momentum 0.9). Time: the mean of two steps after one warm-up.
  Memory: every network runs in a fresh subprocess, and the figure is the increase of the process' peak
  resident set size (``ru_maxrss``) over its resident set size just before the first step: what the steps
  add on top of the built model and the batch, i.e. activations kept for backward, gradients, momentum
  buffers and allocator overhead. A fresh process keeps one network's peak from hiding the next's.
  Torch uses its default thread count (one per core) unless ``--threads`` says otherwise; on a machine
  shared with other work, fewer threads than cores can be much faster (threads wait on busy cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.labels import LabelSpace
from networks import build_network, list_networks

ROOT = Path(__file__).resolve().parents[1]
IN_CHANNELS = 2
NUM_CLASSES = 4
ISEG_PATCH = (128, 128, 64)
SUBVOLUME_PATCH = (32, 32, 32)
UNPADDED_DENSENETS = frozenset({"densenet3d", "densenet3d_early_fusion", "densenet3d_late_fusion", "hyperdensenet"})
# The thesis' Table 1, millions of parameters, by (network, input channels).
THESIS_PARAMS = {
    ("vnet", 2): 45.0,
    ("vnet_light", 2): 25.0,
    ("unet3d", 2): 10.0,
    ("densenet3d", 2): 2.7,
    ("densenet3d_late_fusion", 2): 5.2,
    ("densenet3d_early_fusion", 2): 2.9,
    ("densenet3d_early_fusion", 3): 3.4,
}
# Rows besides (name, IN_CHANNELS): the thesis' 3-stream early fusion.
EXTRA_ROWS = {"densenet3d_early_fusion": (3,)}


@dataclass
class Row:
    network: str
    in_channels: int
    params: int
    patch: tuple[int, ...]
    macs: int
    counted_on: str  # "meta", "built on CPU, then moved to meta" or "counted on CPU"
    step_seconds: float | None = None
    step_gib: float | None = None


def network_kwargs(name: str, patch: Sequence[int]) -> dict[str, Any]:
    """The constructor arguments used: the defaults, except ResNet3D-VAE's VAE branch, which is
    built for one input size and so gets the patch it runs at."""
    return {"input_image_size": tuple(patch)} if name == "resnet3d_vae" else {}


def mac_patch(name: str) -> tuple[int, int, int]:
    return SUBVOLUME_PATCH if name in UNPADDED_DENSENETS else ISEG_PATCH


def build_on_meta(name: str, in_channels: int, kwargs: dict[str, Any]) -> tuple[nn.Module, bool]:
    """The network on the meta device, and whether it had to be built on CPU first."""
    try:
        with torch.device("meta"):
            return build_network(name, in_channels=in_channels, num_classes=NUM_CLASSES, **kwargs), False
    except (RuntimeError, NotImplementedError):
        # swinunetr: MONAI's SwinTransformer calls .item() in its constructor. Built on CPU, it runs on meta.
        network = build_network(name, in_channels=in_channels, num_classes=NUM_CLASSES, **kwargs)
        return network.to("meta"), True


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def count_macs(network: nn.Module, in_channels: int, patch: Sequence[int]) -> int:
    """Multiply-accumulates of one eval-mode forward pass of batch 1, on the network's device."""
    device = next(network.parameters()).device
    x = torch.zeros(1, in_channels, *patch, device=device)
    network.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    return counter.get_total_flops() // 2


def table_row(name: str, in_channels: int = IN_CHANNELS) -> Row:
    """Parameters and MACs of one network at its MAC patch."""
    patch = mac_patch(name)
    kwargs = network_kwargs(name, patch)
    network, built_on_cpu = build_on_meta(name, in_channels, kwargs)
    counted_on = "built on CPU, then moved to meta" if built_on_cpu else "meta"
    try:
        macs = count_macs(network, in_channels, patch)
    except (RuntimeError, NotImplementedError):
        # A forward pass with no meta kernel: count on CPU (no registered network needs this today).
        network = build_network(name, in_channels=in_channels, num_classes=NUM_CLASSES, **kwargs)
        macs, counted_on = count_macs(network, in_channels, patch), "counted on CPU"
    return Row(name, in_channels, count_parameters(network), patch, macs, counted_on)


def current_rss_kib() -> int:
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def measure_step(name: str, size: int, in_channels: int = IN_CHANNELS, overrides: dict[str, Any] | None = None,
                 steps: int = 2, warmup: int = 1) -> tuple[float, float]:
    """Seconds per training step (mean of ``steps`` after ``warmup`` steps) and the peak-RSS increase
    in GiB over the RSS before the first step. Meaningful in a fresh process only (see
    ``measure_in_subprocess``)."""
    from lightning_modules import SegmentationModule  # Lightning is slow to import: only where steps run

    torch.manual_seed(0)
    patch = (size, size, size)
    module = SegmentationModule(network=name, in_channels=in_channels,
                                label_space=LabelSpace.generic(NUM_CLASSES).to_dict(), roi_size=patch,
                                network_kwargs={**network_kwargs(name, patch), **(overrides or {})})
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    image = torch.randn(1, in_channels, *patch)
    label = torch.randint(0, NUM_CLASSES, (1, 1, *patch))
    rss_before = current_rss_kib()
    seconds = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        module.training_losses(image, label)["loss"].backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return statistics.mean(seconds[warmup:]), (peak_rss_kib() - rss_before) / 2**20


def measure_in_subprocess(name: str, size: int, in_channels: int = IN_CHANNELS,
                          overrides: dict[str, Any] | None = None, threads: int | None = None,
                          steps: int = 2, warmup: int = 1) -> tuple[float, float]:
    """``measure_step`` in a fresh Python process, so its peak RSS is this network's alone; it uses
    ``threads`` torch threads (default: as many as this process)."""
    command = [sys.executable, "-m", "benchmarks.model_table", "--measure-one", name, "--step-size", str(size),
               "--in-channels", str(in_channels), "--overrides", json.dumps(overrides or {}),
               "--threads", str(threads or torch.get_num_threads()), "--steps", str(steps), "--warmup", str(warmup)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"step measurement of {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    seconds, gib = json.loads(result.stdout.splitlines()[-1])
    return seconds, gib


def environment_line() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    return (f"torch {torch.__version__}, threads: {torch.get_num_threads()}, "
            f"CPU: {cpu} ({os.cpu_count()} logical cores)")


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Row], step_size: int | None) -> str:
    """The table; the step columns only when ``step_size`` is given."""
    header = ["network", "in ch", "params (M)", "thesis (M)", "MAC patch", "GMAC"]
    if step_size is not None:
        header += [f"step {step_size}^3 (s)", f"step {step_size}^3 +RSS (GiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row.network, str(row.in_channels), _number(row.params / 1e6, 2),
                 _number(THESIS_PARAMS.get((row.network, row.in_channels)), 1),
                 "x".join(map(str, row.patch)), _number(row.macs / 1e9, 1)]
        if step_size is not None:
            cells += [_number(row.step_seconds, 2), _number(row.step_gib, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnotes(rows: Sequence[Row], step_size: int | None, steps: int = 2, warmup: int = 1) -> list[str]:
    names = {row.network for row in rows}
    notes = ["Network arguments: each network's defaults (the papers' settings), 4 classes."]
    if "resnet3d_vae" in names:
        notes.append("Override: resnet3d_vae gets input_image_size = the patch it runs at (MACs and params: "
                     f"{'x'.join(map(str, mac_patch('resnet3d_vae')))}; step: {step_size or 'S'}^3); "
                     "its VAE branch's parameters depend on it.")
    notes.append("Thesis: Table 1 (its V-Net took 1 input channel; here every row but the 3-stream one takes 2).")
    notes.append("GMAC: convolutions and matrix products of one eval-mode forward pass, batch 1 "
                 "(FlopCounterMode FLOPs / 2).")
    unusual = [f"{row.network}: {row.counted_on}" for row in rows if row.counted_on != "meta"]
    notes.append("MACs counted on the meta device" + (f" ({'; '.join(unusual)})." if unusual else "."))
    if step_size is not None:
        notes.append(f"Step: training_losses + backward + SGD step, fp32, batch 1, mean of {steps} after {warmup} "
                     "warm-up; "
                     "+RSS: peak RSS increase over the RSS before the first step, a fresh process per network.")
    return notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--step-size", type=int, default=64, help="cubic patch side of the training step")
    parser.add_argument("--skip-step", action="store_true", help="parameters and MACs only (fast)")
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per network")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before them")
    # Internal: measure one network's step in this (fresh) process and print the JSON result.
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)
    parser.add_argument("--in-channels", type=int, default=IN_CHANNELS, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_one:
        print(json.dumps(measure_step(args.measure_one, args.step_size, args.in_channels, json.loads(args.overrides),
                                      args.steps, args.warmup)))
        return
    names = args.networks.split(",") if args.networks else list_networks()
    unknown = sorted(set(names) - set(list_networks()))
    if unknown:
        raise SystemExit(f"unknown networks {unknown}; registered: {', '.join(list_networks())}")
    configs = [(name, c) for name in names for c in (IN_CHANNELS, *EXTRA_ROWS.get(name, ()))]
    rows = [table_row(name, c) for name, c in configs]
    step_size = None if args.skip_step else args.step_size
    if step_size is not None:
        for row in rows:
            print(f"measuring a {step_size}^3 training step of {row.network} ({row.in_channels} ch) ...",
                  file=sys.stderr, flush=True)
            try:
                row.step_seconds, row.step_gib = measure_in_subprocess(row.network, step_size, row.in_channels,
                                                                       steps=args.steps, warmup=args.warmup)
            except RuntimeError as error:
                print(error, file=sys.stderr)
            print(f"  {row.step_seconds} s, {row.step_gib} GiB", file=sys.stderr, flush=True)
    notes = footnotes(rows, step_size, args.steps, args.warmup)
    text = "\n".join([environment_line(), "", markdown_table(rows, step_size), "", *notes])
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
