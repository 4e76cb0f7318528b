"""Training / validation / test splits: explicit lists, a seeded random split, or k-fold.

The same settings and subject list always give the same split; ``train.py`` saves the split
of every run (``split.json``) beside its config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.io import DataError


@dataclass(frozen=True)
class SplitRule:
    """How the subjects are split, as given, and what takes the place of what: an explicit list,
    or k-fold, replaces a fraction (a data preset's ``val_fraction: 0.2`` is the rule only where
    nothing more specific is given). Settings that contradict each other or lie out of range are
    refused here, when the DataModule is built, naming the options (a :class:`DataError`)."""

    val_subjects: tuple[str, ...] = ()
    test_subjects: tuple[str, ...] = ()
    train_subjects: tuple[str, ...] | None = None
    val_fraction: float | None = 0.0
    test_fraction: float | None = 0.0
    num_folds: int | None = None
    fold: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for role in ("val", "test"):  # null, as a config may write it, holds out none
            object.__setattr__(self, f"{role}_fraction", float(getattr(self, f"{role}_fraction") or 0.0))
        if self.num_folds is not None:
            if self.val_subjects:
                raise DataError("k-fold cross-validation (num_folds) picks the validation subjects: "
                                "drop val_subjects")
            if self.num_folds < 2 or self.fold is None or not 0 <= self.fold < self.num_folds:
                raise DataError(f"k-fold needs num_folds >= 2 and 0 <= fold < num_folds, "
                                f"got num_folds={self.num_folds}, fold={self.fold}")
        elif self.fold is not None:
            raise DataError(f"fold {self.fold} is set but num_folds is not")
        for role, fraction in (("val", self.val_fraction), ("test", self.test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise DataError(f"{role}_fraction must be within [0, 1), got {fraction}")

    @property
    def validation(self) -> str:
        """What chooses the validation subjects: ``folds``, ``subjects``, ``fraction`` or ``none``."""
        if self.num_folds is not None:
            return "folds"
        return "subjects" if self.val_subjects else ("fraction" if self.val_fraction else "none")

    def replaced(self) -> list[str]:
        """Each fraction given that a list or k-fold takes the place of, said in a line."""
        notes = []
        if self.test_subjects and self.test_fraction:
            notes.append(f"test_subjects {list(self.test_subjects)} take the place of test_fraction "
                         f"{self.test_fraction}")
        if self.validation in ("folds", "subjects") and self.val_fraction:
            by = (f"fold {self.fold} of num_folds {self.num_folds}" if self.validation == "folds"
                  else f"val_subjects {list(self.val_subjects)}")
            notes.append(f"{by} take the place of val_fraction {self.val_fraction}")
        return notes

    def as_dict(self) -> dict[str, Any]:
        """The rule as given, for ``split.json`` and :func:`make_split`'s keywords."""
        return {"val_subjects": list(self.val_subjects), "test_subjects": list(self.test_subjects),
                "train_subjects": None if self.train_subjects is None else list(self.train_subjects),
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "num_folds": self.num_folds, "fold": self.fold, "seed": self.seed}


def _draw(pool: list[str], fraction: float, total: int, rng: np.random.Generator, role: str) -> list[str]:
    """``fraction`` of ``total`` subjects (at least one), drawn from ``pool``, in the pool's order."""
    count = max(1, round(fraction * total))
    if count >= len(pool):
        raise DataError(f"{role}_fraction {fraction} of {len(pool)} subjects leaves none to train on")
    chosen = set(rng.choice(pool, count, replace=False).tolist())
    return [s for s in pool if s in chosen]


def make_split(
    subjects: Sequence[str],
    *,
    val_subjects: Sequence[str] = (),
    test_subjects: Sequence[str] = (),
    train_subjects: Sequence[str] | None = None,
    val_fraction: float | None = 0.0,
    test_fraction: float | None = 0.0,
    num_folds: int | None = None,
    fold: int | None = None,
    seed: int = 0,
    where: str = "dataset",
) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` subject ids.

    Test: ``test_subjects``, else a seeded ``test_fraction`` of all subjects. Validation:
    fold ``fold`` of ``num_folds`` over the rest (shuffled with ``seed``), else
    ``val_subjects``, else a seeded ``val_fraction`` (of all subjects) drawn from the rest. Training: ``train_subjects``
    (which must not hold a validation or test subject), else everything not held out.
    The settings are checked as :class:`SplitRule` checks them.
    """
    rule = SplitRule(tuple(map(str, val_subjects)), tuple(map(str, test_subjects)),
                     None if train_subjects is None else tuple(map(str, train_subjects)),
                     val_fraction, test_fraction, num_folds, fold, seed)
    val_fraction, test_fraction = rule.val_fraction, rule.test_fraction
    subjects = [str(s) for s in subjects]
    known = set(subjects)

    def check(ids: Sequence[str], role: str) -> list[str]:
        ids = [str(i) for i in ids]
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"{where}: {role} subjects {unknown} not found; available: {subjects}")
        return ids

    rng = np.random.default_rng(seed)
    test = check(test_subjects, "test") if test_subjects else (
        _draw(subjects, test_fraction, len(subjects), rng, "test") if test_fraction else [])
    pool = [s for s in subjects if s not in set(test)]

    if rule.validation == "folds":
        assert num_folds is not None and fold is not None  # SplitRule checked them
        if len(pool) < num_folds:
            raise DataError(f"{where}: {len(pool)} subjects (after the test set) cannot make {num_folds} folds")
        order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
        in_fold = set(order[fold::num_folds])
        val = [s for s in pool if s in in_fold]
    elif rule.validation == "subjects":
        val = check(val_subjects, "validation")
    else:
        val = _draw(pool, val_fraction, len(subjects), rng, "val") if val_fraction else []

    both = sorted(set(val) & set(test))
    if both:
        raise DataError(f"{where}: subjects {both} are in both the validation and the test set")
    if train_subjects is None:
        held_out = set(val) | set(test)
        train = [s for s in subjects if s not in held_out]
    else:
        train = check(train_subjects, "training")
        for role, ids in (("test", test), ("validation", val)):
            leaked = sorted(set(train) & set(ids))
            if leaked:
                raise DataError(f"{where}: subjects {leaked} are in both the training and the {role} set")
    return {"train": train, "val": val, "test": test}
