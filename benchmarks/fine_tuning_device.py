"""Fine-tuning into a model that lives on the GPU (a fit started from Python loads the pretrained
weights at ``on_fit_start``, after the Trainer moved the model): a CPU checkpoint of a 4-modality
BraTS U-Net into a FLAIR + T1ce post-treatment U-Net on the device, then a training step there.

    python -m benchmarks.fine_tuning_device [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from core.checkpoint import network_checkpoint
from core.dataset_labels import BRATS_POST_TREATMENT_REGIONS, BRATS_REGIONS
from core.transfer import transfer_weights
from networks import build_network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    source = build_network("unet3d", in_channels=4, num_classes=3, base_features=4)
    checkpoint = network_checkpoint(source, "unet3d", {"base_features": 4}, ["T1", "T1ce", "T2", "FLAIR"],
                                    BRATS_REGIONS)
    target = build_network("unet3d", in_channels=2, num_classes=4, base_features=4).to(args.device)
    transfer = transfer_weights(target, checkpoint, ["FLAIR", "T1ce"], BRATS_POST_TREATMENT_REGIONS, (32, 32, 32),
                                "a CPU checkpoint", network_name="unet3d")
    first = target.encoder[0][0][0].weight
    same = torch.equal(first.detach().cpu(), source.encoder[0][0][0].weight[:, [3, 1]])
    loss = target(torch.randn((2, 2, 32, 32, 32), device=args.device)).float().square().mean()
    loss.backward()
    print(f"fine-tuning on {args.device}: {transfer.summary()}; FLAIR and T1ce filters taken exactly: {same}; "
          f"a training step there: loss {loss.item():.4f}, gradient finite: {bool(torch.isfinite(first.grad).all())}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
