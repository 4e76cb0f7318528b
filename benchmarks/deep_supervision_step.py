"""One training step with deep supervision: ours (heads at their own resolution, targets
downsampled), MONAI's way (heads upsampled to full size) and nnU-Net v2's, side by side.

    python -m benchmarks.deep_supervision_step --nnunet-python /path/to/venv-with-nnunetv2/bin/python
    python -m benchmarks.deep_supervision_step --patch 80 96 80 --batch 2 --rounds 3 --steps 3

The same plan for all three (the demo's nnU-Net plan by default: 80x96x80 patches, batch 2, 2
input channels, 4 classes, 5 levels of 32-64-128-256-320 maps, heads on the 2 decoder levels
below the top as nnU-Net's trainer supervises them, weights 1/2, 1/4), SGD with Nesterov
momentum. A step is zero_grad, forward, Dice + cross-entropy on every output, backward,
optimiser step. nnU-Net's targets are downsampled
beforehand, as its data loader does in background workers; ours are resized inside the loss.
Each variant runs in a fresh process, the rounds interleave them, and the median step time of
each is printed with its ratio to ours. nnU-Net needs ``nnunetv2`` (installed beside torch in
another environment is fine: ``--nnunet-python``); without it, it is left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

FILTERS = [32, 64, 128, 256, 320]
HEADS = 2  # decoder levels below the top that are supervised (nnU-Net's default: all but the lowest)


def _time_steps(step: Callable[[], None], steps: int) -> list[float]:
    step()  # warm-up: allocator, autotuning
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def ours(variant: str, patch: list[int], batch: int, steps: int) -> list[float]:
    """Our DynUNet and loss; ``upsampled`` reproduces MONAI's full-size heads."""
    from monai.losses import DeepSupervisionLoss
    from monai.networks.nets import DynUNet as MonaiDynUNet

    from lightning_modules.losses import build_loss
    from networks import build_network

    torch.manual_seed(0)
    net = build_network("dynunet", in_channels=2, num_classes=4, levels=len(FILTERS), filters=FILTERS,
                        deep_supr_num=HEADS).train()
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    loss_fn = DeepSupervisionLoss(build_loss("dice_ce"), weight_mode="exp")
    image, target = torch.randn(batch, 2, *patch), torch.randint(0, 4, (batch, 1, *patch)).float()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        if variant == "upsampled":
            main, *heads = MonaiDynUNet.forward(net, image).unbind(dim=1)
        else:
            out = net(image)
            main, heads = out.logits, out.deep_supervision
        loss_fn([main, *heads], target).backward()
        optimiser.step()

    return _time_steps(step, steps)


def nnunet(patch: list[int], batch: int, steps: int) -> list[float]:
    """nnU-Net v2's PlainConvUNet, DC_and_CE_loss and DeepSupervisionWrapper, as its trainer builds them."""
    import numpy as np
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    torch.manual_seed(0)
    n = len(FILTERS)
    net = PlainConvUNet(2, n, FILTERS, torch.nn.Conv3d, 3, [1] + [2] * (n - 1), [2] * n, 4, [2] * (n - 1), True,
                        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                        {"inplace": True}, deep_supervision=True).train()
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    weights = np.array([1 / 2 ** i for i in range(n - 1)])
    weights[HEADS + 1:] = 0  # nnUNetTrainer: the lowest output is not supervised (the same heads as ours)
    weights = weights / weights.sum()
    dice = {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}
    loss_fn = DeepSupervisionWrapper(DC_and_CE_loss(dice, {}, weight_ce=1, weight_dice=1,
                                                    dice_class=MemoryEfficientSoftDiceLoss), weights)
    image = torch.randn(batch, 2, *patch)
    full = torch.randint(0, 4, (batch, 1, *patch)).float()
    targets = [full[..., :: 2 ** i, :: 2 ** i, :: 2 ** i] for i in range(n - 1)]  # done by its data loader

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss_fn(net(image), targets).backward()
        optimiser.step()

    return _time_steps(step, steps)


def run_one(variant: str, patch: list[int], batch: int, steps: int) -> list[float]:
    return nnunet(patch, batch, steps) if variant == "nnunet" else ours(variant, patch, batch, steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, nargs=3, default=[80, 96, 80])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, interleaved")
    parser.add_argument("--nnunet-python", default=None,
                        help="a Python with nnunetv2 (default: this one, if it has it)")
    parser.add_argument("--variant", choices=["native", "upsampled", "nnunet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:  # a worker process: print the step times as JSON
        print(json.dumps(run_one(args.variant, args.patch, args.batch, args.steps)))
        return
    root = Path(__file__).resolve().parent.parent
    pythons = {"native": sys.executable, "upsampled": sys.executable}
    nnunet_python = args.nnunet_python or sys.executable
    probe = subprocess.run([nnunet_python, "-c", "import nnunetv2, dynamic_network_architectures"], capture_output=True)
    if probe.returncode == 0:
        pythons["nnunet"] = nnunet_python
    else:
        print(f"nnU-Net left out: {nnunet_python} cannot import nnunetv2")
    times: dict[str, list[float]] = {v: [] for v in pythons}
    for _ in range(args.rounds):
        for variant, python in pythons.items():
            command = [python, str(Path(__file__).resolve()), "--variant", variant, "--patch", *map(str, args.patch),
                       "--batch", str(args.batch), "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=root, check=True,
                                  env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
            times[variant] += json.loads(done.stdout.strip().splitlines()[-1])
    base = statistics.median(times["native"])
    print(f"deep-supervision training step, patch {args.patch}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} x {args.steps} steps per variant")
    names = {"native": "ours (heads at their resolution)", "upsampled": "MONAI's way (heads upsampled)",
             "nnunet": "nnU-Net v2 (PlainConvUNet, DC_and_CE)"}
    for variant, values in times.items():
        median = statistics.median(values)
        print(f"  {names[variant]:<40} {median:7.2f} s/step   {median / base:5.2f}x ours")


if __name__ == "__main__":
    main()
