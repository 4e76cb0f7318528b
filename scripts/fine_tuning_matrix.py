"""Which networks fine-tune across modalities and outputs (``--model.pretrained``): for every
registered network, at its small test settings, a checkpoint of random weights is transferred
(``core.transfer.transfer_weights``, with its check that the result computes the checkpoint's
outputs) in three cases, and the outcome printed with its seconds.

    python scripts/fine_tuning_matrix.py [NETWORK ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.checkpoint import network_checkpoint  # noqa: E402
from core.dataset_labels import BRATS_POST_TREATMENT_REGIONS, BRATS_REGIONS, ISEG  # noqa: E402
from core.io import DataError  # noqa: E402
from core.labels import LabelSpace  # noqa: E402
from core.transfer import transfer_weights  # noqa: E402
from networks import build_network, list_networks, smoke_settings  # noqa: E402

# (name, checkpoint's modalities and labels, the new model's modalities and labels)
CASES: list[tuple[str, list[str], LabelSpace, list[str], LabelSpace]] = [
    ("BraTS 4 -> FLAIR+T1ce, +RC", ["T1", "T1ce", "T2", "FLAIR"], BRATS_REGIONS, ["FLAIR", "T1ce"],
     BRATS_POST_TREATMENT_REGIONS),
    ("T1+T2 -> T2+T1", ["T1", "T2"], ISEG, ["T2", "T1"], ISEG),
    ("T1+T2 -> T2", ["T1", "T2"], ISEG, ["T2"], ISEG),
]


def outcome(name: str, kwargs: dict, size: tuple[int, ...], case: tuple) -> str:
    """``ok`` with the tensors taken whole, or the refusal's reason, with the seconds."""
    _, their_modalities, their_labels, modalities, labels = case
    start = time.perf_counter()
    try:
        source = build_network(name, in_channels=len(their_modalities), num_classes=their_labels.num_outputs, **kwargs)
        checkpoint = network_checkpoint(source, name, kwargs, their_modalities, their_labels)
        target = build_network(name, in_channels=len(modalities), num_classes=labels.num_outputs, **kwargs)
        transfer = transfer_weights(target, checkpoint, modalities, labels, size, "checkpoint", network_name=name)
        result = f"ok ({transfer.tensors} whole)"
    except DataError as error:
        reason = str(error).removeprefix("checkpoint: ")
        result = ("refused: a pathway per modality" if "pathway per modality" in reason
                  else "refused: not matched by name (checked)" if "cannot be matched by name" in reason
                  else f"refused: {reason.split('is not this one: ')[-1].split(';')[0]}")
    except ValueError as error:  # the network's own refusal (a per-modality network given one channel)
        result = f"n/a ({str(error)[:50]})"
    return f"{result}, {time.perf_counter() - start:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", help="default: every registered network")
    args = parser.parse_args(argv)
    print("| network | " + " | ".join(c[0] for c in CASES) + " |")
    print("|---" * (len(CASES) + 1) + "|")
    for name in args.networks or list_networks():
        settings = smoke_settings(name)
        if settings is None:
            continue
        cells = [outcome(name, dict(settings.kwargs), tuple(settings.input_size), case) for case in CASES]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
