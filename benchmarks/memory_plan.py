"""Does the planner's memory model count what autograd keeps? For each network and patch size:
the bytes ``core.planning.MemoryModel`` predicts for the saved tensors (counted once on the
``meta`` device at two small probes, scaled to the patch) against the bytes autograd really
saves in one training forward pass on this CPU (distinct storages, parameters excluded), and
the ratio; in float32, or with ``--precision bf16-mixed`` under the CPU's bfloat16 autocast
(where the CPU has native bf16: AVX512-BF16 or AMX; CUDA's autocast keeps a few more ops in
float32). A GPU's peak adds the backward pass' buffers and the optimiser state to the same count:
``benchmarks/gpu_fast_path.py`` measures that one.

    python -m benchmarks.memory_plan [--patches 64,64,64 96,96,96] [--batch 1] [--precision bf16-mixed]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.inference import fast_bf16
from core.planning import BASE_FEATURES, MemoryModel, dynunet_topology
from networks import build_network


def _planned_dynunet(patch: Sequence[int]) -> tuple[dict[str, Any], int]:
    topology = dynunet_topology(patch)
    return topology, 2 ** (topology["levels"] - 1)


# The families compared: the two the planner plans (as it configures them) and two more; each
# gives its options for a patch and the size its sides must divide by.
NETWORKS = {
    "unet3d": lambda patch: ({"base_features": BASE_FEATURES, "deep_supervision": 2}, 8),
    "dynunet": _planned_dynunet,
    "segresnet": lambda patch: ({"init_filters": 16}, 8),
    "vnet": lambda patch: ({}, 16),
}


def saved_bytes(network: nn.Module, in_channels: int, patch: Sequence[int], batch: int, bf16: bool = False) -> int:
    """Bytes of the distinct storages autograd saves in one training forward pass (float32, or
    under bfloat16 autocast; computed for real), parameters excluded."""
    parameters = {p.untyped_storage().data_ptr() for p in network.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    network.train()
    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)):
        output: Any = network(torch.zeros(batch, in_channels, *patch))
    del output
    return sum(storages.values())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", nargs="+", default=["64,64,64", "96,96,96"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--in-channels", type=int, default=2)
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    args = parser.parse_args(argv)
    bf16 = args.precision == "bf16-mixed"
    if bf16 and not fast_bf16("cpu"):
        parser.error("bf16-mixed: bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): measure it where native")
    patches = [tuple(int(v) for v in p.split(",")) for p in args.patches]
    torch.manual_seed(0)
    print("| network | patch x batch | parameters (M) | estimated saved (GB) | autograd saved (GB) | estimate / saved "
          "| s |\n|---|---|---:|---:|---:|---:|---:|")
    for name, configure in NETWORKS.items():
        for patch in patches:
            kwargs, divisor = configure(patch)
            if any(side % divisor for side in patch):
                print(f"| {name} | {patch} | | | | sides must divide by {divisor} | |")
                continue
            network = build_network(name, in_channels=args.in_channels, num_classes=4, **kwargs)
            start = time.perf_counter()
            estimate = MemoryModel.of(network, args.in_channels, divisor, args.precision).saved_bytes(patch, args.batch)
            real = saved_bytes(network, args.in_channels, patch, args.batch, bf16)
            seconds = time.perf_counter() - start
            params = sum(p.numel() for p in network.parameters()) / 1e6
            print(f"| {name} | {'x'.join(map(str, patch))} x {args.batch} | {params:.2f} | {estimate / 1e9:.3f} | "
                  f"{real / 1e9:.3f} | {estimate / real:.3f} | {seconds:.0f} |", flush=True)
    print(f"\nvoxels per patch: {', '.join(str(math.prod(p)) for p in patches)}; {args.precision}, this CPU's autograd")


if __name__ == "__main__":
    main()
