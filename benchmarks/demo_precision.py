"""Does bf16 keep the demo's accuracy? The whole demo (fit, then test of its best checkpoint) in
float32 and in bf16 mixed precision, one after the other, same seed: wall time and test DSC.

    python -m demo.synthetic_iseg                       # the demo data, once
    python -m benchmarks.demo_precision [--accelerator cpu] [--precisions 32-true bf16-mixed]

The Trainer trains in ``bf16-mixed`` by default on a CPU with native bfloat16 (AVX512-BF16, AMX)
on the strength of this comparison: the mean test DSC must stay within 0.005 of float32's. A bf16
arm is refused where bf16 is emulated (an AVX2-only CPU: about 80x slower than float32, hours
for the demo). Each arm writes its run under ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 0.005  # the largest drop of the mean test DSC that bf16 may cost


def run_arm(precision: str, accelerator: str, out: Path, epochs: int | None = None) -> dict[str, float]:
    """Fit and test the demo at ``precision``; seconds of the fit and the logged test Dice."""
    from train import run_cli

    common = ["--config", "configs/demo.yaml", "--trainer.precision", precision, "--trainer.accelerator", accelerator,
              "--trainer.logger", "false", "--data.init_args.cache_dir", str(out / "cache"),
              *(["--trainer.max_epochs", str(epochs)] if epochs else [])]
    start = time.perf_counter()
    run_cli(["fit", *common, "--checkpoint.dirpath", str(out / precision / "checkpoints")], save_config=False)
    seconds = time.perf_counter() - start
    tested = run_cli(["test", *common, "--ckpt_path", str(out / precision / "checkpoints" / "best.ckpt"),
                      "--test_report.output_dir", str(out / precision / "test")], save_config=False)
    dice = {k.removeprefix("test/"): float(v) for k, v in tested.trainer.callback_metrics.items()
            if k.startswith("test/dice_")}
    return {"fit s": seconds, **dice}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="cpu", help="cpu (the default precision's case) or gpu")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, help="fewer epochs than the demo's 12 (a quick look, not the figure)")
    args = parser.parse_args(argv)

    from core.inference import fast_bf16

    device = "cuda" if args.accelerator == "gpu" else "cpu"
    if any("bf16" in p for p in args.precisions) and not fast_bf16(device):
        parser.error(f"bf16 is emulated on this {device} (no native bfloat16): the bf16 arm would take hours")
    os.chdir(REPO)  # the demo config's relative data path
    sys.argv = sys.argv[:1]  # this script's flags are not train.py's
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for precision in args.precisions:
            figures = run_arm(precision, args.accelerator, out, args.epochs)
            rows.append((precision, figures, os.getloadavg()[0]))
            print(f"{precision}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()), flush=True)
    print("\n| precision | fit s | CSF | GM | WM | mean | load |\n|---|---:|---:|---:|---:|---:|---:|")
    for precision, f, load in rows:
        print(f"| {precision} | {f['fit s']:.0f} | {f['dice_CSF']:.4f} | {f['dice_GM']:.4f} | {f['dice_WM']:.4f} | "
              f"{f['dice_mean']:.4f} | {load:.2f} |")
    if len(rows) > 1:
        drop = rows[0][1]["dice_mean"] - rows[-1][1]["dice_mean"]
        print(f"\nmean DSC {rows[-1][0]} vs {rows[0][0]}: {-drop:+.4f} "
              f"({'within' if drop <= TOLERANCE else 'beyond'} the {TOLERANCE} tolerance); fit "
              f"{rows[0][1]['fit s'] / rows[-1][1]['fit s']:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
