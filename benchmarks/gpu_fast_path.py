"""Training steps and whole-volume prediction on the device at hand: time, memory, FLOPs.

    python -m benchmarks.gpu_fast_path                       # on a GPU: the full table (a few minutes)
    python -m benchmarks.gpu_fast_path --quick               # CPU-sized: small patches, 2 steps

For the 3D U-Net (32 base maps, 19 M parameters) and SegResNet (16 initial filters) at 128³ and
the thesis patch (64 x 128 x 128), batch ``--batch``, 2 channels, 4 classes, Dice + CE, SGD, it
prints per setting (fp32; bf16 autocast; bf16 + channels_last_3d; with ``--compile`` also
torch.compile): step time (median after warm-up), samples/s, peak memory (CUDA's allocator; on
CPU none is measured), model FLOPs per step counted by ``torch.utils.flop_counter`` on one
forward + backward, and achieved TFLOP/s. Then the memory ``core/planning.py`` predicts for a
DynUNet plan against the peak measured for it. Last, a BraTS-size volume (4 x 240 x 240 x 155)
segmented by ``core.inference.sliding_window_logits`` (our path) and by MONAI's
``sliding_window_inference`` called directly, windows on the device and stitching on the device
or, for volumes that do not fit, on the CPU: time and peak memory of each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from monai.inferers import sliding_window_inference
from torch.utils.flop_counter import FlopCounterMode

from core.inference import sliding_window_logits
from core.planning import CUDA_OVERHEAD_GB, MemoryModel
from lightning_modules.losses import build_loss
from networks import build_network

NETWORKS = {"unet3d": {"base_features": 32}, "segresnet": {"init_filters": 16}, "vnet": {"dropout": 0.0},
            "dynunet": {"filters": [32, 64, 128, 256, 320], "levels": 5}}
PATCHES = {"128^3": (128, 128, 128), "thesis 64x128x128": (64, 128, 128)}
BRATS = (4, 240, 240, 155)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def training_step(name: str, kwargs: dict, patch: tuple[int, ...], batch: int, device: torch.device,
                  bf16: bool, channels_last: bool, compile_model: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    net = build_network(name, in_channels=2, num_classes=4, **kwargs).to(device).train()
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    model = torch.compile(net) if compile_model else net
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    loss_fn = build_loss("dice_ce")
    image = torch.randn(batch, 2, *patch, device=device).to(memory_format=memory_format)
    target = torch.randint(0, 4, (batch, 1, *patch), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            logits = model(image)
            logits = logits.logits if hasattr(logits, "logits") else logits
            loss = loss_fn(logits.float(), target)
        loss.backward()
        optimiser.step()

    return step


def flops_per_step(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def time_step(step: Callable[[], None], device: torch.device, steps: int) -> float:
    step()  # warm-up (and compilation)
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_table(device: torch.device, patches: dict, batch: int, steps: int, compile_model: bool) -> None:
    settings = [("fp32", False, False), ("bf16", True, False)]
    if device.type == "cuda":
        settings.append(("bf16 + channels_last_3d", True, True))
    print("| network | patch | setting | s/step | samples/s | peak GB | GFLOP/step | TFLOP/s |\n" + "|---" * 8 + "|")
    for name, kwargs in NETWORKS.items():
        for label, patch in patches.items():
            for setting, bf16, channels_last in settings + ([("bf16 + compile", True, False)] if compile_model else []):
                _reset_peak(device)
                step = training_step(name, kwargs, patch, batch, device, bf16, channels_last, "compile" in setting)
                flops = flops_per_step(training_step(name, kwargs, patch, batch, device, bf16, channels_last, False))
                seconds = time_step(step, device, steps)
                peak = _peak_gb(device)
                print(f"| {name} | {label} | {setting} | {seconds:.3f} | {batch / seconds:.2f} | "
                      f"{'' if peak is None else f'{peak:.2f}'} | {flops / 1e9:.0f} | {flops / seconds / 1e12:.2f} |",
                      flush=True)


def planned_memory(device: torch.device, patch: tuple[int, ...], batch: int, steps: int) -> None:
    """core/planning.py's memory estimate against the peak a bf16 training step really takes,
    for each family (the DynUNet as the planner configures it for ``patch``)."""
    from benchmarks.memory_plan import NETWORKS as FAMILIES

    print("\n| network | patch x batch | estimated GB (no CUDA overhead) | measured peak GB | estimate / measured |\n"
          "|---|---|---:|---:|---:|")
    for name, configure in FAMILIES.items():
        kwargs, divisor = configure(patch)
        net = build_network(name, in_channels=2, num_classes=4, **kwargs)
        estimate = MemoryModel.of(net, 2, divisor, "bf16-mixed").gigabytes(patch, batch) - CUDA_OVERHEAD_GB
        _reset_peak(device)
        time_step(training_step(name, kwargs, patch, batch, device, True, False, False), device, steps)
        peak = _peak_gb(device)
        measured = ("", "not measured on a CPU") if peak is None else (f"{peak:.2f}", f"{estimate / peak:.2f}")
        print(f"| {name} | {'x'.join(map(str, patch))} x {batch} | {estimate:.2f} | {measured[0]} | {measured[1]} |",
              flush=True)


def prediction_table(device: torch.device, volume: tuple[int, ...], roi: tuple[int, ...]) -> None:
    net = build_network("segresnet", in_channels=volume[0], num_classes=3, init_filters=16).to(device).eval()
    image = torch.randn(1, *volume)
    print(f"\n| prediction of {list(volume)}, SegResNet, windows {list(roi)}, overlap 0.5 | seconds | peak GB |\n"
          "|---|---|---|")
    cases = [("ours, stitched on the device", image.to(device), None),
             ("MONAI sliding_window_inference, on the device", image.to(device), "monai")]
    if device.type == "cuda":
        cases.append(("MONAI, windows on the GPU, stitched on the CPU", image, "monai-cpu"))
    for label, tensor, how in cases:
        _reset_peak(device)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if how is None:
                out = sliding_window_logits(net, tensor, roi, sw_batch_size=2, overlap=0.5)
            else:
                out = sliding_window_inference(tensor, roi, 2, net, overlap=0.5, mode="gaussian", sw_device=device,
                                               device=device if how == "monai" else torch.device("cpu"))
            out.argmax(1)
        _sync(device)
        peak = _peak_gb(device)
        print(f"| {label} | {time.perf_counter() - start:.2f} | {'' if peak is None else f'{peak:.2f}'} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small patches and volume: checks it runs on a CPU")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow first step)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    patches = {"32x64x64": (32, 64, 64)} if args.quick else PATCHES
    steps = 2 if args.quick else args.steps
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}\n")
    training_table(device, patches, args.batch, steps, args.compile)
    print()
    planned_memory(device, (64, 64, 64) if args.quick else (128, 128, 128), args.batch, steps)
    volume, roi = ((4, 96, 96, 64), (64, 64, 64)) if args.quick else (BRATS, (128, 128, 128))
    prediction_table(device, volume, roi)


if __name__ == "__main__":
    main()
