"""Label maps: a dataset's own label values -> class indices, ignored values, and regions.

One class may gather several dataset values (MRBrainS18's thesis task puts cortical GM and
basal ganglia in one GM class); values listed as ignored become ``IGNORE_INDEX`` and count in
no loss and no metric. Regions (BraTS' whole tumour, tumour core, enhancing tumour) are
overlapping unions of classes, for training with one sigmoid output per region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.io import DataError
from lightning_modules.losses import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "LabelMap"]


@dataclass(frozen=True)
class LabelMap:
    """How a dataset's label values become training targets, and back.

    Attributes:
        class_names: one name per class, background (class 0) first.
        class_values: the dataset value written back for each class (predictions on disk).
        value_to_class: every dataset value that may occur -> its class index, or
            ``IGNORE_INDEX`` for values that count nowhere.
        regions: optional ``(name, class indices)`` unions for region-based (sigmoid) training.
    """

    class_names: tuple[str, ...]
    class_values: tuple[int, ...]
    value_to_class: Mapping[int, int]
    regions: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.class_values):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.class_values)} values")
        known = set(range(len(self.class_names))) | {IGNORE_INDEX}
        bad = {v: c for v, c in self.value_to_class.items() if c not in known}
        if bad:
            raise ValueError(f"label values map to unknown classes: {bad}")
        for name, members in self.regions:
            if not members or not set(members) <= set(range(1, len(self.class_names))):
                raise ValueError(f"region {name!r} must list foreground classes, got {members}")

    @classmethod
    def from_values(cls, values: Mapping[int, str], ignore: Sequence[int] = ()) -> LabelMap:
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
    def from_groups(cls, groups: Mapping[str, Sequence[int]], ignore: Sequence[int] = ()) -> LabelMap:
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

    def with_regions(self, regions: Mapping[str, Sequence[int]]) -> LabelMap:
        """The same map with regions given as unions of dataset *values* (``{"WT": [1, 2, 4]}``)."""
        as_classes = []
        for name, values in regions.items():
            unknown = [v for v in values if v not in self.value_to_class]
            if unknown:
                raise ValueError(f"region {name!r}: values {unknown} are not in the label map")
            as_classes.append((str(name), tuple(sorted({self.value_to_class[v] for v in values}))))
        return LabelMap(self.class_names, self.class_values, dict(self.value_to_class), tuple(as_classes))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ignored_values(self) -> list[int]:
        return sorted(v for v, c in self.value_to_class.items() if c == IGNORE_INDEX)

    def describe(self) -> dict:
        """A JSON-friendly description (cache keys, saved splits, the README)."""
        return {
            "classes": dict(zip(self.class_names, self.class_values, strict=True)),
            "value_to_class": {str(v): c for v, c in sorted(self.value_to_class.items())},
            "regions": {name: list(members) for name, members in self.regions},
        }

    def encode(self, label: np.ndarray, path: Path | str = "label") -> np.ndarray:
        """Dataset values -> class indices (int16; ``IGNORE_INDEX`` where ignored).

        Non-integer values and values outside the map are errors that name the file and list them.
        """
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise DataError(f"{path}: label map has non-integer values")
        rounded = rounded.astype(np.int64)
        values = np.unique(rounded)
        unknown = sorted(set(values.tolist()) - set(self.value_to_class))
        if unknown:
            raise DataError(f"{path}: label values {unknown} are not in the label map {sorted(self.value_to_class)}")
        offset = int(values.min())
        lookup = np.zeros(int(values.max()) - offset + 1, dtype=np.int16)
        for value, index in self.value_to_class.items():
            if offset <= value <= values.max():
                lookup[value - offset] = index
        return lookup[rounded - offset]
