"""Training steps and whole-volume prediction on the device at hand: time, memory, FLOPs.

    python -m benchmarks.gpu_fast_path                       # on a GPU: the full table (a few minutes)
    python -m benchmarks.gpu_fast_path --networks unet3d segresnet --patches 128 --compile unet3d
    python -m benchmarks.gpu_fast_path --quick               # CPU-sized: small patches, 2 steps

First the memory ``core/planning.py`` predicts for each family it plans (the DynUNet as the
planner configures it) against the peak a bf16 step really takes. Then, for the 3D U-Net (32 base
maps, 19 M parameters), SegResNet (16 initial filters), V-Net and DynUNet at 128³ and the thesis
patch (64 x 128 x 128), batch ``--batch``, 2 channels, 4 classes, Dice + CE, SGD, per setting
(fp32; bf16 autocast where bf16 is native; bf16 + channels_last_3d on a GPU; last, for the
networks ``--compile`` names, or all with no name, torch.compile of the bf16 settings, a minute or
so each to compile): step time (median after the first step, whose time is given too), samples/s,
peak memory (CUDA's allocator; none on a CPU), model FLOPs per step counted by
``torch.utils.flop_counter`` on one forward + backward (once per network and patch), and achieved
TFLOP/s. Last, a BraTS-size volume (4 x 240 x 240 x 155) segmented by
``core.inference.sliding_window_logits`` (our path) and by MONAI's ``sliding_window_inference``
called directly, windows on the device and stitching on the device or, for volumes that do not
fit, on the CPU: time and peak memory of each.
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

from core.inference import fast_bf16, sliding_window_logits
from core.planning import CUDA_OVERHEAD_GB, MemoryModel
from lightning_modules.losses import build_loss
from networks import build_network

NETWORKS = {"unet3d": {"base_features": 32}, "segresnet": {"init_filters": 16}, "vnet": {"dropout": 0.0},
            "dynunet": {"filters": [32, 64, 128, 256, 320], "levels": 5}}
PATCHES = {"128": (128, 128, 128), "thesis": (64, 128, 128)}  # --patches names them
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


def time_step(step: Callable[[], None], device: torch.device, steps: int) -> tuple[float, float]:
    """Seconds of the first step (compilation, cuDNN's autotuning) and the median of ``steps`` after it."""
    start = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def table_rows(networks: list[str], patches: dict[str, tuple[int, ...]], compiled: list[str], native_bf16: bool,
               cuda: bool) -> list[tuple[str, tuple[int, ...], str, bool, bool]]:
    """(network, patch, setting, bf16, channels_last) in the order they are timed: every network's
    plain settings (bf16 only where it is native, channels_last_3d on a GPU), then the compiled
    networks' bf16 settings, whose first steps take a minute or so each."""
    settings = [("fp32", False, False)] + ([("bf16", True, False)] if native_bf16 else [])
    if cuda:
        settings.append(("bf16 + channels_last_3d", True, True))
    rows = [(name, patch, setting, bf16, cl) for name in networks for patch in patches.values()
            for setting, bf16, cl in settings]
    return rows + [(name, patch, f"{setting} + compile", bf16, cl) for name in compiled for patch in patches.values()
                   for setting, bf16, cl in settings if bf16]


def training_table(device: torch.device, networks: list[str], patches: dict, batch: int, steps: int,
                   compiled: list[str]) -> None:
    """One row per network, patch and setting, then the ``compiled`` networks under torch.compile
    (its first step, the compilation, is the warm-up and not in the figure), last because each
    compilation takes a minute or so."""
    rows = table_rows(networks, patches, compiled, native_bf16=fast_bf16(device), cuda=device.type == "cuda")
    print("| network | patch | setting | s/step | samples/s | peak GB | GFLOP/step | TFLOP/s | first step s |\n"
          + "|---" * 9 + "|")
    flops: dict[tuple, int] = {}
    for name, patch, setting, bf16, channels_last in rows:
        kwargs = NETWORKS[name]
        if (name, patch) not in flops:  # the same in every setting
            flops[name, patch] = flops_per_step(training_step(name, kwargs, patch, batch, device, False, False, False))
        _reset_peak(device)
        step = training_step(name, kwargs, patch, batch, device, bf16, channels_last, "compile" in setting)
        first, seconds = time_step(step, device, steps)
        peak = _peak_gb(device)
        print(f"| {name} | {'x'.join(map(str, patch))} | {setting} | {seconds:.3f} | {batch / seconds:.2f} | "
              f"{'' if peak is None else f'{peak:.2f}'} | {flops[name, patch] / 1e9:.0f} | "
              f"{flops[name, patch] / seconds / 1e12:.2f} | {first:.1f} |", flush=True)


def planned_memory(device: torch.device, patch: tuple[int, ...], batch: int, steps: int) -> None:
    """core/planning.py's memory estimate against the peak a bf16 training step really takes,
    for each family (the DynUNet as the planner configures it for ``patch``)."""
    from benchmarks.memory_plan import NETWORKS as FAMILIES

    print("| network | patch x batch | estimated GB (no CUDA overhead) | measured peak GB | estimate / measured |\n"
          "|---|---|---:|---:|---:|")
    for name, configure in FAMILIES.items():
        kwargs, divisor = configure(patch)
        net = build_network(name, in_channels=2, num_classes=4, **kwargs)
        estimate = MemoryModel.of(net, 2, divisor, "bf16-mixed").gigabytes(patch, batch) - CUDA_OVERHEAD_GB
        peak = None
        if device.type == "cuda":  # a CPU has no peak to compare with
            _reset_peak(device)
            time_step(training_step(name, kwargs, patch, batch, device, True, False, False), device, steps)
            peak = _peak_gb(device)
        measured = ("", "not measured on a CPU") if peak is None else (f"{peak:.2f}", f"{estimate / peak:.2f}")
        print(f"| {name} | {'x'.join(map(str, patch))} x {batch} | {estimate:.2f} | {measured[0]} | {measured[1]} |",
              flush=True)
    print()


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
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--patches", nargs="+", choices=list(PATCHES), default=list(PATCHES),
                        help="128: 128^3; thesis: 64x128x128")
    parser.add_argument("--compile", nargs="*", choices=list(NETWORKS),
                        help="also time torch.compile for these networks (all of them when none is named)")
    parser.add_argument("--no-prediction", action="store_true", help="leave out the BraTS-size prediction")
    args = parser.parse_args(argv)
    compiled = [] if args.compile is None else (args.compile or list(NETWORKS))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    patches = {"quick": (32, 64, 64)} if args.quick else {key: PATCHES[key] for key in args.patches}
    steps = 2 if args.quick else args.steps
    print(f"device: {device_name}; torch {torch.__version__}; batch {args.batch}\n")
    planned_memory(device, (64, 64, 64) if args.quick else (128, 128, 128), args.batch, steps)
    training_table(device, args.networks, patches, args.batch, steps, compiled)
    if not args.no_prediction:
        volume, roi = ((4, 96, 96, 64), (64, 64, 64)) if args.quick else (BRATS, (128, 128, 128))
        prediction_table(device, volume, roi)


if __name__ == "__main__":
    main()
