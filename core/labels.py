"""The label space: a dataset's label values -> classes, ignored values, regions, and back.

One object owns every decision about labels, so that no other module branches on
"classes or regions" (the role of nnU-Net's ``LabelManager``):

- dataset values -> class indices (several values may form one class, MRBrainS18's thesis GM
  gathers cortical GM and basal ganglia); ignored values -> ``IGNORE_INDEX``, counted in no loss
  and no metric;
- optional regions (BraTS' whole tumour, tumour core, enhancing tumour): overlapping unions of
  classes, trained with one sigmoid output per region and painted back into classes in order;
- softmax or sigmoid, logits / probabilities -> class map, loss targets, hard masks for Dice;
- the scored structures (foreground classes, or the regions) by name, as class indices and as
  dataset values, for the Dice columns, the test table, ``volumes.csv`` and ``evaluate.py``.

It is stored in checkpoints as the plain dict of :meth:`LabelSpace.to_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.io import DataError

__all__ = ["IGNORE_INDEX", "LabelSpace", "masked_one_hot", "valid_mask", "whole_label_values"]

LABEL_ROUNDING = 1e-3  # a stored label value this close to a whole number is that number (float rounding)
IGNORE_INDEX = -1  # target voxels with this class count in no loss and no metric (e.g. MRBrainS18 labels 9, 10)


def whole_label_values(label: np.ndarray, path: Path | str = "label") -> np.ndarray:
    """A label map's values as int64: each within :data:`LABEL_ROUNDING` of a whole number is
    that number (a map stored as scaled floats); any other is an error naming the file, the
    count and a few values (a map resampled with linear interpolation)."""
    label = np.asarray(label)
    if np.issubdtype(label.dtype, np.integer):
        return label.astype(np.int64, copy=False)
    rounded = np.rint(label)
    off = np.abs(rounded - label) > LABEL_ROUNDING
    if off.any():
        shown = ", ".join(f"{v:g}" for v in np.unique(label[off])[:4])
        raise DataError(f"{path}: label map has non-integer values in {int(off.sum())} voxels (e.g. {shown}); "
                        "a label map holds whole numbers: was it resampled with linear interpolation "
                        "instead of nearest neighbour?")
    return rounded.astype(np.int64)


def _table_size(labels: np.ndarray) -> int | None:
    """The length of a lookup table indexed by ``labels``' values (their maximum + 1) when they
    are small non-negative integers, else None (floats, negative or large values)."""
    if labels.size and np.issubdtype(labels.dtype, np.integer):
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < 2**16:
            return high + 1
    return None


def present_values(labels: np.ndarray) -> list[int]:
    """The distinct values of an integer label map, ascending: counted when they are small
    non-negative integers (a BraTS volume: 0.03 s, where ``np.unique`` sorts 9 M voxels in
    0.23 s), else by ``np.unique``."""
    labels = np.asarray(labels)
    if (size := _table_size(labels)) is not None:
        return np.flatnonzero(np.bincount(labels.ravel(), minlength=size)).tolist()
    return np.unique(labels).tolist()


def remapped(labels: np.ndarray, mapping: Mapping[int, int], values: Sequence[int], dtype: type = np.int16
             ) -> np.ndarray:
    """An integer label map's values through ``mapping``, by a lookup table over the range of
    ``values`` (its present values, ascending, each a key of ``mapping``)."""
    if not values:
        return np.zeros(np.shape(labels), dtype=dtype)
    offset, high = values[0], values[-1]
    lookup = np.zeros(high - offset + 1, dtype=dtype)
    for value, target in mapping.items():
        if offset <= value <= high:
            lookup[value - offset] = target
    return lookup[np.asarray(labels) - offset]


def value_mask(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Where an integer label map holds one of ``values`` (``np.isin``), by a lookup table when
    the map's values are small non-negative integers (3x faster on a BraTS volume)."""
    labels = np.asarray(labels)
    if (size := _table_size(labels)) is not None:
        table = np.zeros(size, dtype=bool)
        table[[v for v in values if 0 <= v < size]] = True
        return table[labels]
    return np.isin(labels, list(values))


def valid_mask(target: torch.Tensor) -> torch.Tensor:
    """Where the target counts: a float mask of ``target``'s shape (1 = scored, 0 = ignored)."""
    return (target != IGNORE_INDEX).to(torch.float32)


def masked_one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot (B, C, ...) of a class map (B, 1, ...), all zeros at ignored voxels, so they
    add to no intersection and no volume of any Dice."""
    label = label.long()
    valid = label != IGNORE_INDEX
    hot = F.one_hot(torch.where(valid, label, 0)[:, 0], num_classes).movedim(-1, 1)
    return (hot * valid).float()


@dataclass(frozen=True)
class LabelSpace:
    """How a dataset's label values become training targets and scored structures, and back.

    Attributes:
        class_names: one name per class, background (class 0) first.
        class_values: the dataset value written back for each class (predictions on disk).
        value_to_class: every dataset value that may occur -> its class index, or
            ``IGNORE_INDEX`` for values that count nowhere.
        regions: optional ``(name, class indices)`` unions for region-based (sigmoid) training,
            ordered so that each region owns exactly one class no later region holds (its
            paint class; BraTS: WT, TC, ET).
        unknown_values_hint: what to do about a label file holding values outside the map (the
            dataset's remedy, e.g. the other BraTS convention), added to that error; not part of
            the space (not compared, not stored).
    """

    class_names: tuple[str, ...]
    class_values: tuple[int, ...]
    value_to_class: Mapping[int, int]
    regions: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())
    unknown_values_hint: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.class_values):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.class_values)} values")
        if len(self.class_names) < 2:
            raise ValueError(f"a label space needs background and at least one class, got {list(self.class_names)}")
        known = set(range(len(self.class_names))) | {IGNORE_INDEX}
        bad = {v: c for v, c in self.value_to_class.items() if c not in known}
        if bad:
            raise ValueError(f"label values map to unknown classes: {bad}")
        for name, members in self.regions:
            if not members or not set(members) <= set(range(1, len(self.class_names))):
                raise ValueError(f"region {name!r} must list foreground classes 1..{len(self.class_names) - 1}, "
                                 f"got {list(members)}")
        if self.regions:
            self.paint_classes  # noqa: B018  (raises unless regions map back to classes)

    # --- Construction --------------------------------------------------------------------
    @classmethod
    def from_values(cls, values: Mapping[int, str], ignore: Sequence[int] = ()) -> LabelSpace:
        """One class per value (``{0: "background", 10: "CSF", ...}``, background first),
        plus values to ignore."""
        values = {int(v): str(n) for v, n in values.items()}
        overlap = sorted(set(values) & {int(v) for v in ignore})
        if overlap:
            raise ValueError(f"label values {overlap} are both classes and ignored")
        mapping = {value: index for index, value in enumerate(values)}
        mapping.update({int(v): IGNORE_INDEX for v in ignore})
        return cls(tuple(values.values()), tuple(values), mapping)

    @classmethod
    def from_groups(cls, groups: Mapping[str, Sequence[int]], ignore: Sequence[int] = ()) -> LabelSpace:
        """One class per group of values (``{"background": [0], "GM": [1, 2], ...}``); each
        class is written back as its group's first value."""
        mapping: dict[int, int] = {}
        for index, members in enumerate(groups.values()):
            for value in members:
                if int(value) in mapping:
                    raise ValueError(f"label value {value} is in two classes")
                mapping[int(value)] = index
        for value in ignore:
            if int(value) in mapping:
                raise ValueError(f"label value {value} is both a class and ignored")
            mapping[int(value)] = IGNORE_INDEX
        return cls(tuple(groups), tuple(int(m[0]) for m in groups.values()), mapping)

    @classmethod
    def generic(cls, num_classes: int) -> LabelSpace:
        """Classes ``0..num_classes-1`` named ``background, class1, ...``, values = indices."""
        return cls.from_values({0: "background", **{i: f"class{i}" for i in range(1, num_classes)}})

    def with_regions(self, regions: Mapping[str, Sequence[int]]) -> LabelSpace:
        """The same map with regions given as unions of dataset *values* (``{"WT": [1, 2, 4]}``)."""
        as_classes = []
        for name, values in regions.items():
            unknown = [v for v in values if v not in self.value_to_class]
            if unknown:
                raise ValueError(f"region {name!r}: values {unknown} are not in the label map")
            as_classes.append((str(name), tuple(sorted({self.value_to_class[v] for v in values}))))
        return LabelSpace(self.class_names, self.class_values, dict(self.value_to_class), tuple(as_classes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-friendly description (checkpoints, cache keys, saved splits, configs)."""
        return {
            "classes": dict(zip(self.class_names, self.class_values, strict=True)),
            "value_to_class": {str(v): c for v, c in sorted(self.value_to_class.items())},
            "regions": {name: list(members) for name, members in self.regions},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpace:
        """The inverse of :meth:`to_dict`."""
        classes = dict(data["classes"])
        return cls(tuple(str(n) for n in classes), tuple(int(v) for v in classes.values()),
                   {int(v): int(c) for v, c in data["value_to_class"].items()},
                   tuple((str(n), tuple(int(c) for c in m)) for n, m in (data.get("regions") or {}).items()))

    @classmethod
    def from_legacy(cls, num_classes: int = 2, class_names: Sequence[str] | None = None,
                    label_values: Sequence[int] | None = None, regions: Sequence[Sequence[int]] | None = None,
                    region_names: Sequence[str] | None = None) -> LabelSpace:
        """The label space of a checkpoint written before label spaces were stored whole
        (separate ``num_classes``, ``class_names``, ``label_values``, ``regions`` and
        ``region_names`` model arguments)."""
        names = list(class_names) if class_names else ["background"] + [f"class{i}" for i in range(1, num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes: {names}")
        values = [int(v) for v in label_values] if label_values else list(range(num_classes))
        space = cls(tuple(names), tuple(values), {v: i for i, v in enumerate(values)})
        if regions is None:
            if region_names is not None:
                raise ValueError(f"region_names {list(region_names)} given without regions")
            return space
        regions = [tuple(int(c) for c in region) for region in regions]
        if not regions:
            raise ValueError("regions is empty; pass None for ordinary multi-class training")
        # Named region1, region2, ... first: the label space checks the regions themselves.
        named = replace(space, regions=tuple((f"region{i}", r) for i, r in enumerate(regions, start=1)))
        if region_names is None:
            return named
        if len(region_names) != len(regions):
            raise ValueError(f"{len(region_names)} region names for {len(regions)} regions: {list(region_names)}")
        return replace(named, regions=tuple((str(n), r) for n, r in zip(region_names, regions, strict=True)))

    # --- What the model predicts ---------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def region_based(self) -> bool:
        """One sigmoid per region (True) or a softmax over the classes (False)."""
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        """Output channels of the network: one per region, else one per class."""
        return len(self.regions) if self.regions else self.num_classes

    @property
    def output_names(self) -> list[str]:
        """The network's output channels by name: its regions, else its classes."""
        return [name for name, _ in self.regions] if self.regions else list(self.class_names)

    @property
    def ignored_values(self) -> list[int]:
        return sorted(v for v, c in self.value_to_class.items() if c == IGNORE_INDEX)

    @property
    def paint_classes(self) -> list[int]:
        """The class each region paints when regions are turned back into a class map: the one
        class in the region and in no later region (WT {1,2,3}, TC {1,3}, ET {3} -> 2, 1, 3).

        Raises ValueError unless every region has exactly one such class, since otherwise the
        painted map could not tell its classes apart.
        """
        paint = []
        for index, (name, region) in enumerate(self.regions):
            later = {c for _, other in self.regions[index + 1:] for c in other}
            own = sorted(set(region) - later)
            if len(own) != 1:
                raise ValueError(
                    f"region {index} {name!r} {sorted(set(region))} has {len(own)} classes in no later region "
                    f"({own}); each region needs exactly one, so that predicted regions map back to classes "
                    "(order regions from the largest to the smallest, e.g. WT, TC, ET)")
            paint.append(own[0])
        return paint

    # --- Scored structures ---------------------------------------------------------------
    @property
    def structure_names(self) -> list[str]:
        """The scored structures: the regions in region mode, else the foreground classes."""
        return [name for name, _ in self.regions] if self.regions else list(self.class_names[1:])

    @property
    def structure_classes(self) -> dict[str, list[int]]:
        """Structure name -> the class indices forming it."""
        if self.regions:
            return {name: list(members) for name, members in self.regions}
        return {name: [c] for c, name in enumerate(self.class_names) if c > 0}

    @property
    def structure_values(self) -> dict[str, list[int]]:
        """Structure name -> every dataset value forming it (how ground-truth files are scored)."""
        return {name: sorted(v for v, c in self.value_to_class.items() if c in classes)
                for name, classes in self.structure_classes.items()}

    # --- Conversions -----------------------------------------------------------------------
    def encode(self, label: np.ndarray, path: Path | str = "label") -> np.ndarray:
        """Dataset values -> class indices (int16; ``IGNORE_INDEX`` where ignored).

        Non-integer values and values outside the map are errors that name the file and list them;
        values within :data:`LABEL_ROUNDING` of a whole number (a label map stored as scaled floats)
        are that number.
        """
        rounded = whole_label_values(label, path)
        values = present_values(rounded)  # ascending
        unknown = sorted(set(values) - set(self.value_to_class))
        if unknown:
            hint = f"; {self.unknown_values_hint}" if self.unknown_values_hint else ""
            raise DataError(f"{path}: label values {unknown} are not in the label map "
                            f"{sorted(self.value_to_class)}{hint}")
        return remapped(rounded, self.value_to_class, values)

    def decode(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> the dataset's own values (uint8 when they fit, else int16)."""
        lookup = np.asarray(self.class_values)
        dtype = np.uint8 if lookup.min() >= 0 and lookup.max() < 256 else np.int16
        return lookup[np.asarray(classes)].astype(dtype)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes, or one sigmoid per region (channel axis 1)."""
        return torch.sigmoid(logits) if self.regions else torch.softmax(logits, dim=1)

    def classes_from_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Class map (B, 1, ...): the most probable class, or the regions above 0.5 painted back."""
        if not self.regions:
            return probabilities.argmax(dim=1, keepdim=True)
        return self.paint(probabilities > 0.5)

    def classes_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Class map (B, 1, ...) from logits (regions: logit > 0, i.e. probability > 0.5)."""
        if not self.regions:
            return logits.argmax(dim=1, keepdim=True)
        return self.paint(logits > 0)

    def paint(self, regions: torch.Tensor) -> torch.Tensor:
        """Binary region maps (B, R, ...) -> class map (B, 1, ...): background 0, then each
        region painted with its class in order, later regions over earlier ones (nested BraTS
        regions give back the classes exactly)."""
        paint = self.paint_classes
        if regions.shape[1] != len(paint):
            raise ValueError(f"{regions.shape[1]} region maps for {len(paint)} painting classes")
        classes = torch.zeros_like(regions[:, :1], dtype=torch.long)
        for channel, value in enumerate(paint):
            classes = torch.where(regions[:, channel:channel + 1].bool(), value, classes)
        return classes

    def region_targets(self, label: torch.Tensor) -> torch.Tensor:
        """Class map (B, 1, ...) -> multi-hot region map (B, R, ...) as floats: 1 where the
        voxel's class is in the region, 0 where not, ``IGNORE_INDEX`` in every channel where the
        voxel is ignored (so the mark survives nearest-neighbour resizing for deep supervision)."""
        label = label.long()
        members = [torch.isin(label, torch.as_tensor(list(m), device=label.device)) for _, m in self.regions]
        hot = torch.cat(members, dim=1).float()
        return torch.where(label == IGNORE_INDEX, float(IGNORE_INDEX), hot)

    def loss_target(self, label: torch.Tensor) -> torch.Tensor:
        """What the loss compares the logits with: the class map (long), or in region mode its
        multi-hot regions (float, ``IGNORE_INDEX`` kept at ignored voxels)."""
        return self.region_targets(label) if self.regions else label.long()

    def structure_masks(self, classes: torch.Tensor) -> torch.Tensor:
        """Class map (B, 1, ...) -> one binary mask per scored structure (B, S, ...), all zero
        at ignored voxels so they add to no intersection and no volume of any Dice."""
        if self.regions:
            return self.region_targets(classes).clamp_min(0)
        return masked_one_hot(classes, self.num_classes)[:, 1:]

    def dice_masks(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard prediction and truth masks (B, S, ...) per scored structure for the Dice, both
        zero at the label's ignored voxels. The prediction is the class map written to disk
        (regions painted into classes, then unioned back), so the Dice logged in validation and
        test is the one ``evaluate.py`` gives on the saved segmentation."""
        prediction = self.structure_masks(self.classes_from_logits(logits))
        return prediction * valid_mask(label), self.structure_masks(label)

    def volumes_ml(self, classes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
        """Millilitres per scored structure (a region: the union of its classes) of a class map
        on the grid of ``affine``, rounded to 0.001 ml."""
        voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0
        counts = np.bincount(np.asarray(classes).ravel(), minlength=self.num_classes)
        return {name: round(float(counts[members].sum() * voxel_ml), 3)
                for name, members in self.structure_classes.items()}
