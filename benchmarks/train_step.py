"""How fast does the demo recipe train here? Steps per second (loader included) and validation
seconds per volume, for each precision and memory layout, side by side in one run.

    python -m demo.synthetic_iseg            # the demo data, once
    python -m benchmarks.train_step [--steps 30] [--arms fp32 fp32+cl bf16 bf16+cl]
    python -m benchmarks.train_step --config configs/demo.yaml --config configs/recipes/nnunet.yaml \
        --set data.init_args.num_workers 8 --arms bf16 --augment-on loader device   # where to augment

Each arm builds ``configs/demo.yaml``'s model and DataModule through ``train.py`` (same
seed, the demo's disk cache), trains ``--warmup`` + ``--steps`` steps with Lightning's fit loop
(no validation inside it), then validates the two validation subjects whole
(sliding windows, as during fit). Figures:

- steps/s: optimiser steps per second after the warm-up, time between batch ends (so the
  loader's time is in it, as in a real epoch);
- s/volume: seconds per validation volume (sliding-window inference, loss and Dice);
- epoch: the demo's epoch (48 steps and, every second epoch, 2 validation volumes) in seconds.

Arms: ``fp32``/``bf16`` is the precision (``bf16-mixed`` autocast), ``+cl`` the weights in
channels_last_3d (``model.channels_last``); with ``--augment-on loader device`` each arm runs
once per place of the augmentation (``data.init_args.augment_on``), for a recipe that augments.
``--config`` (repeatable) and ``--set KEY VALUE`` compose the recipe as ``train.py`` would.
bf16 arms are skipped where the CPU lacks native bf16 (``core.inference.fast_bf16``): emulated,
a step takes minutes. Arms run one after another, never two at once; quote ratios from one run
and the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parent.parent
ARMS = {"fp32": ("32-true", False), "fp32+cl": ("32-true", True), "bf16": ("bf16-mixed", False),
        "bf16+cl": ("bf16-mixed", True)}


class StepClock(pl.Callback):
    """Wall-clock time at the end of every training batch and around every validation batch."""

    def __init__(self) -> None:
        self.train_ends: list[float] = []
        self.val_seconds: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.train_ends.append(time.perf_counter())

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._val_start = time.perf_counter()

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.val_seconds.append(time.perf_counter() - self._val_start)


def measure(arm: str, configs: list[str], steps: int, warmup: int, workdir: Path,
            extra: list[str] = ()) -> dict[str, float]:
    """One arm: steps/s over ``steps`` after ``warmup``, seconds per validation volume."""
    from lightning_modules.trainer import Trainer
    from train import run_cli

    precision, channels_last = ARMS[arm.split("/")[0]]
    config_args = [arg for config in configs for arg in ("--config", config)]
    cli = run_cli([*config_args, *extra, "--model.channels_last", str(channels_last).lower(),
                   "--trainer.precision", precision, "--trainer.logger", "false",
                   "--trainer.max_steps", str(warmup + steps), "--trainer.limit_val_batches", "0",
                   "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                   "--checkpoint.dirpath", str(workdir / arm.replace("/", "-"))], run=False, save_config=False)
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ends = clock.train_ends[warmup - 1:]
    steps_per_s = (len(ends) - 1) / (ends[-1] - ends[0])
    validator = Trainer(precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock])
    validator.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    per_volume = sum(clock.val_seconds) / len(clock.val_seconds)
    batches_per_epoch = len(cli.datamodule.train_dataloader())
    epoch = batches_per_epoch / steps_per_s + per_volume * len(clock.val_seconds) / 2  # validation every 2nd epoch
    return {"steps/s": steps_per_s, "s/step": 1 / steps_per_s, "s/volume": per_volume, "epoch s": epoch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="train.py configs, in order (default: the demo's)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a train.py option, e.g. --set data.init_args.num_workers 8")
    parser.add_argument("--augment-on", nargs="+", choices=["loader", "device"],
                        help="run every arm with the augmentation in each of these places")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first batch end starts the clock)")

    from core.inference import fast_bf16

    os.chdir(REPO)  # the demo config's relative data and cache paths
    sys.argv = sys.argv[:1]  # this script's flags are not train.py's
    native_bf16 = fast_bf16("cpu") if not torch.cuda.is_available() else fast_bf16("cuda")
    arms = [a for a in args.arms if native_bf16 or not a.startswith("bf16")]
    skipped = sorted(set(args.arms) - set(arms))
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} threads, "
          f"native bf16: {native_bf16}" + (f" (skipped: {', '.join(skipped)})" if skipped else ""), flush=True)
    configs = args.config or [str(REPO / "configs/demo.yaml")]
    extra = [arg for key, value in args.set for arg in (f"--{key}", value)]
    places = args.augment_on or [None]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm, place in [(arm, place) for arm in arms for place in places]:
            here = extra + ([] if place is None else ["--data.init_args.augment_on", place])
            arm = arm if place is None else f"{arm}/{place}"
            figures = measure(arm, configs, args.steps, args.warmup, Path(tmp), here)
            load = os.getloadavg()[0]
            rows.append((arm, figures, load))
            print(f"{arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()) + f" (load {load:.2f})",
                  flush=True)
    base = rows[0][1]["steps/s"] if rows else 1.0
    print("\n| arm | steps/s | s/step | val s/volume | demo epoch s | vs first | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arm, f, load in rows:
        print(f"| {arm} | {f['steps/s']:.2f} | {f['s/step']:.3f} | {f['s/volume']:.2f} | {f['epoch s']:.1f} | "
              f"{f['steps/s'] / base:.2f}x | {load:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
