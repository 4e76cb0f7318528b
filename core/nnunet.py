"""nnU-Net's (and the Decathlon's) ``dataset.json``: reading it, the channels it names and the
label space its ``labels`` (regions too) define.

Plain Python, below the DataModules: ``datamodules.nnunet`` reads datasets with it and
``evaluate.py --dataset nnunet`` scores against a dataset's labels without loading Lightning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.io import DataError
from core.labels import LabelSpace


def read_dataset_json(folder: Path, required: Sequence[str] = ("modality", "labels", "training"),
                      kind: str = "a Decathlon task folder") -> dict[str, Any]:
    """``folder/dataset.json`` (Decathlon's and nnU-Net's), checked for the ``required`` keys."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: file not found ({kind} holds dataset.json)")
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error
    missing = [k for k in required if k not in description]
    if missing:
        raise DataError(f"{path}: missing keys {missing}")
    return description


def read_nnunet_description(folder: Path) -> dict[str, Any]:
    """``folder/dataset.json``, checked for what reading the dataset needs (nnU-Net v1's
    ``modality`` read as ``channel_names``)."""
    description = read_dataset_json(folder, required=("labels", "file_ending"),
                                    kind="an nnU-Net raw dataset folder")
    if "channel_names" not in description and "modality" in description:
        description["channel_names"] = description["modality"]
    if "channel_names" not in description:
        raise DataError(f"{Path(folder) / 'dataset.json'}: missing keys ['channel_names']")
    return description


def channel_modalities(channel_names: Mapping[str, str], source: str) -> tuple[str, ...]:
    """Modality names in channel order; a name two channels share gets its channel number
    (``MRI_0000``, ``MRI_0001``), so every channel can be chosen by name."""
    try:
        order = sorted((int(index), str(name)) for index, name in channel_names.items())
    except ValueError as error:
        raise DataError(f"{source}: channel_names keys must be channel numbers ('0', '1', ...)") from error
    if [index for index, _ in order] != list(range(len(order))):
        raise DataError(f"{source}: channel_names must number the channels 0..{len(order) - 1}, got "
                        f"{[index for index, _ in order]}")
    names = [name for _, name in order]
    return tuple(name if names.count(name) == 1 else f"{name}_{index:04d}" for index, name in order)


def nnunet_label_space(labels: Mapping[str, int | Sequence[int]], regions_class_order: Sequence[int] | None,
                       source: str) -> LabelSpace:
    """nnU-Net's ``labels`` as a label space: one class per value; with region labels (a name
    -> several values), one region each, painted back in ``regions_class_order`` as nnU-Net does
    (``ignore``: the value counted nowhere)."""
    labels = dict(labels)
    ignore = labels.pop("ignore", None)
    if labels.get("background") != 0:
        raise DataError(f"{source}: labels must map 'background' to 0, got {labels.get('background')!r}")
    if isinstance(ignore, list):
        raise DataError(f"{source}: the ignore label must be one value, got {ignore}")
    ignored = [] if ignore is None else [int(ignore)]
    regions = {name: [int(v) for v in value] for name, value in labels.items()
               if isinstance(value, list) and name != "background"}
    if not regions:
        return LabelSpace.from_values({int(v): name for name, v in sorted(labels.items(), key=lambda i: int(i[1]))},
                                      ignore=ignored)
    singles = [name for name, value in labels.items() if not isinstance(value, list) and name != "background"]
    if singles:
        regions.update({name: [int(labels[name])] for name in singles})
    if regions_class_order is None or len(regions_class_order) != len(regions):
        raise DataError(f"{source}: region labels {list(regions)} need regions_class_order, one value per region, "
                        f"got {regions_class_order}")
    order = [int(v) for v in regions_class_order]
    values = sorted({v for members in regions.values() for v in members})
    if sorted(order) != values:
        raise DataError(f"{source}: regions_class_order {order} must list each label value {values} once")
    region_of = dict(zip(order, regions, strict=True))  # the value each region paints -> the region's name
    space = LabelSpace.from_values({0: "background", **{v: region_of[v] for v in values}}, ignore=ignored)
    space = space.with_regions(regions)
    painted = [space.class_values[c] for c in space.paint_classes]
    if painted != order:
        raise DataError(f"{source}: regions {regions} paint the values {painted} in order, regions_class_order says "
                        f"{order}; order the regions from the largest to the smallest")
    return space
