"""Plan a training run from the data (nnU-Net's fingerprint and rules, as a command of ours).

    python plan.py --config configs/datasets/iseg2017.yaml --data.init_args.data_dir /data/iSeg-2017-Training \\
        --family dynunet --gpu-memory 24 --output configs/plans/iseg2017_dynunet_24gb.yaml
    python train.py fit --config configs/datasets/iseg2017.yaml --config configs/plans/iseg2017_dynunet_24gb.yaml ...

Reads the dataset through the DataModule its config names (the training and validation
subjects; the test subjects are not looked at), computes the fingerprint (spacings, shapes,
foreground intensity statistics per modality, class frequencies) and writes a preset to compose
after the data config: target spacing (with nnU-Net's anisotropy rule), patch and batch size
that fit ``--gpu-memory`` GB, the network's depth and widths (``--family dynunet`` or
``unet3d``), class-balanced sampling. The fingerprint goes beside it as JSON. Rules and the
memory model: ``core/planning.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from core.io import DataError, write_text_atomically
from core.planning import FAMILIES, describe_fingerprint, fingerprint, plan_training, preset

GPU_MEMORY_CHOICES = (8, 24, 40, 80)


PLAN_HEADER = "# Planned by plan.py"  # the first line of every preset plan.py writes


def replaceable_plan(output: Path, overwrite: bool) -> str | None:
    """Why ``output`` must not be replaced, or None: a file plan.py did not write (an edited
    preset, any other file) never is; an earlier plan only with ``overwrite``."""
    fingerprint = output.with_suffix(".fingerprint.json")
    if not output.exists():
        return (f"{fingerprint}: exists without the plan it was written with; refusing to replace it (choose another "
                "--output)") if fingerprint.exists() else None
    try:
        ours = output.is_file() and output.read_text(encoding="utf-8").startswith(PLAN_HEADER)
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        return f"{output}: exists and was not written by plan.py; refusing to replace it (choose another --output)"
    return None if overwrite else f"{output}: holds an earlier plan; pass --overwrite to replace it"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="dynunet", help="network family to plan for")
    parser.add_argument("--gpu-memory", type=float, default=8, help=f"GPU memory in GB, e.g. {GPU_MEMORY_CHOICES}")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "16-mixed", "32"])
    parser.add_argument("--output", type=Path, help="preset YAML to write (default: print it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier plan of plan.py at --output")
    args, data_args = parser.parse_known_args(argv)
    if args.output is not None and (refusal := replaceable_plan(args.output, args.overwrite)):
        parser.exit(2, f"plan.py: error: {refusal}\n")  # before the dataset is read
    if args.gpu_memory <= 1.0:
        parser.exit(2, f"plan.py: error: --gpu-memory {args.gpu_memory} GB leaves nothing after CUDA's overhead\n")
    from train import run_cli  # the DataModule as the data config builds it

    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # our own flags are on sys.argv

    try:
        cli = run_cli([*data_args, "--trainer.logger", "false"], run=False, save_config=False)
        datamodule = cli.datamodule
        split = datamodule.split()
        subjects = [*split["train"], *split["val"]]
        fp = fingerprint(subjects, datamodule.label_space, datamodule.modality_names,
                         crop_to_nonzero=datamodule.preprocessing.crop_to_nonzero)
        plan = plan_training(fp, args.family, args.gpu_memory, datamodule.in_channels,
                             datamodule.label_space.num_outputs, args.precision)
    except DataError as error:
        parser.exit(2, f"plan.py: error: {error}\n")
    lines = [f"{PLAN_HEADER.removeprefix('# ')} for {type(datamodule).__name__} at {datamodule.data_dir}",
             *describe_fingerprint(fp),
             f"plan for {args.family} on {args.gpu_memory:g} GB ({args.precision}), estimated "
             f"{plan.estimated_memory_gb} GB:", *plan.reasons]
    text = "".join(f"# {line}\n" for line in lines) + yaml.safe_dump(preset(plan, fp), sort_keys=False)
    if args.output:
        write_text_atomically(args.output, text)
        write_text_atomically(args.output.with_suffix(".fingerprint.json"), json.dumps(fp.to_dict(), indent=1))
        print(text + f"# written to {args.output} (fingerprint: {args.output.with_suffix('.fingerprint.json')})")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
