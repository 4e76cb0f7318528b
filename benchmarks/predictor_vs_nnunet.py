"""Our sliding-window predictor against nnU-Net v2's, with the same network on the same volume.

    python -m benchmarks.predictor_vs_nnunet --plans runs/time_to_accuracy/nnunet/preprocessed/Dataset001_Demo

Run it with a Python that has both ``nnunetv2`` and our requirements' ``monai`` (nnU-Net's venv
plus ``pip install monai==1.6.1``); the ``--plans`` folder is what ``nnUNetv2_plan_and_preprocess``
wrote (``benchmarks/time_to_accuracy.py`` makes one for the demo).

One 2 x 144 x 192 x 256 volume (iSeg's size; z-scored noise, which costs a network what an
image costs) and one network, nnU-Net's own ``PlainConvUNet`` of that plan (5 stages, 32 -> 320
maps), with random weights. Every side predicts the logits of the whole volume with windows of
the plan's patch, step 0.5 (overlap 0.5), Gaussian weighting and no mirroring (mirroring
multiplies every side by 8):

- ``nnunet``: ``nnUNetPredictor.predict_sliding_window_return_logits`` (tile by tile, fp16
  accumulation, ``inference_mode``), on the CPU;
- ``ours``: what ``predict.py`` runs (``core.inference.mean_over_flips`` around
  ``sliding_window_logits``: ``inference_mode``, float32), with ``--sw-batch-size`` windows per
  pass (our checkpoints' default is 4); ``ours_bf16``: the same under bfloat16 autocast
  (``predict.py --precision bf16``, part of ``--cpu-fast`` on CPUs with native bf16);
- explored once: ``ours_no_grad`` (the path before, ``no_grad``), ``ours_no_grad_sw1`` (one
  window per pass, as nnU-Net), ``ours_channels_last`` (channels-last-3D weights and windows).

The sides take turns (``--repeats`` rounds) in one process, so drift hits them alike. It prints
each side's median seconds, the ratio to the first side, and the share of voxels whose class
(argmax) equals the first and second sides'. The window count is the same (54 for iSeg's size)
but not the positions: nnU-Net spreads its windows evenly, MONAI steps by the overlap and moves
the last window back inside, so the logits of the two predictors differ where the windows'
contexts differ (much more with random weights than with a trained network).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from core.inference import mean_over_flips, sliding_window_logits

SIDES = ("nnunet", "ours_no_grad", "ours_no_grad_sw1", "ours_channels_last", "ours", "ours_bf16")


def nnunet_predictor(plans_folder: Path, device: torch.device) -> object:
    """nnU-Net's predictor holding nnU-Net's network for the plan's 3d_fullres configuration."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((plans_folder / "nnUNetPlans.json").read_text()))
    dataset_json = json.loads((plans_folder / "dataset.json").read_text())
    configuration = plans.get_configuration("3d_fullres")
    labels = plans.get_label_manager(dataset_json)
    channels = determine_num_input_channels(plans, configuration, dataset_json)
    torch.manual_seed(0)
    network = nnUNetTrainer.build_network_architecture(plans, configuration, channels, labels.num_segmentation_heads,
                                                       enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=device, verbose=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [network.state_dict()], dataset_json,
                                    "nnUNetTrainer", None)
    return predictor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=Path, default=Path("runs/time_to_accuracy/nnunet/preprocessed/Dataset001_Demo"))
    parser.add_argument("--shape", type=int, nargs=3, default=[144, 192, 256])
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", default=["nnunet", "ours", "ours_bf16"],
                        help=f"among {', '.join(SIDES)}")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    predictor = nnunet_predictor(args.plans, device)
    network = predictor.network.eval()
    roi = tuple(int(p) for p in predictor.configuration_manager.patch_size)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, *args.shape, generator=generator)

    channels_last = None

    def ours(sw_batch_size: int, mode: str = "inference_mode", layout: str = "contiguous",
             precision: str = "32") -> torch.Tensor:
        """Our sliding windows; ``mode="inference_mode"`` is predict.py's path
        (``mean_over_flips``, without mirroring), ``no_grad`` the path before it."""
        nonlocal channels_last
        model = network
        if layout == "channels_last":
            if channels_last is None:
                channels_last = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
            model = lambda x: channels_last(x.contiguous(memory_format=torch.channels_last_3d))  # noqa: E731
        windows = lambda x: sliding_window_logits(model, x, roi, sw_batch_size, 0.5)  # noqa: E731
        if mode == "no_grad":
            with torch.no_grad():
                return windows(image[None])[0]
        return mean_over_flips(windows, image[None], flips=False, precision=precision)[0]

    sides = {
        "nnunet": lambda: predictor.predict_sliding_window_return_logits(image),
        "ours_no_grad": lambda: ours(args.sw_batch_size, "no_grad"),
        "ours_no_grad_sw1": lambda: ours(1, "no_grad"),
        "ours_channels_last": lambda: ours(args.sw_batch_size, layout="channels_last"),
        "ours": lambda: ours(args.sw_batch_size),
        "ours_bf16": lambda: ours(args.sw_batch_size, precision="bf16"),
    }
    times: dict[str, list[float]] = {side: [] for side in args.sides}
    outputs: dict[str, torch.Tensor] = {}
    print(f"volume {tuple(image.shape)}, window {roi}, step 0.5, Gaussian, no mirroring; network "
          f"{type(network).__name__} ({sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters); "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    for round_ in range(args.repeats):
        for side in args.sides:
            start = time.perf_counter()
            out = sides[side]()
            times[side].append(time.perf_counter() - start)
            outputs[side] = out.float()
            print(f"round {round_ + 1} {side}: {times[side][-1]:.1f} s", flush=True)
    reference = statistics.median(times[args.sides[0]])
    classes = {side: out.argmax(0) for side, out in outputs.items()}
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(f"| side | median s ({args.repeats} runs) | vs {args.sides[0]} | same class as {args.sides[0]} | "
          f"same class as {args.sides[1]} |\n|---|---|---|---|---|")
    for side in args.sides:
        median = statistics.median(times[side])
        agree = [float((classes[side] == classes[other]).float().mean()) for other in args.sides[:2]]
        print(f"| {side} | {median:.1f} | {median / reference:.2f}x | {agree[0]:.2%} | {agree[1]:.2%} |")

if __name__ == "__main__":
    main()
