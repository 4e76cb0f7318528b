"""Training / validation / test splits: explicit lists, a seeded random split, k-fold (ours, or
nnU-Net's exactly), or the folds of a split file in nnU-Net's format (``splits_final.json``).

The same settings and subject list always give the same split; ``train.py`` saves the split
of every run (``split.json``) beside its config.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
    fold_rule: str = "seeded"
    splits_file: str | None = None

    def __post_init__(self) -> None:
        for role in ("val", "test"):  # null, as a config may write it, holds out none
            object.__setattr__(self, f"{role}_fraction", float(getattr(self, f"{role}_fraction") or 0.0))
        if self.fold_rule not in FOLD_RULES:
            raise DataError(f"fold_rule must be one of {list(FOLD_RULES)}, got {self.fold_rule!r}")
        if self.fold_rule == "nnunet" and self.num_folds is None:
            raise DataError("fold_rule nnunet is a rule of k-fold: set num_folds (nnU-Net's 5) and fold")
        if self.splits_file is not None:
            given = [name for name, value in (("num_folds", self.num_folds), ("val_subjects", self.val_subjects),
                                              ("train_subjects", self.train_subjects)) if value]
            if given:
                raise DataError(f"splits_file {self.splits_file} holds each fold's training and validation "
                                f"subjects: drop {', '.join(given)}")
            if self.fold is None or self.fold < 0:
                raise DataError(f"splits_file {self.splits_file} needs the fold to use: fold 0, 1, ...")
        elif self.num_folds is not None:
            if self.val_subjects:
                raise DataError("k-fold cross-validation (num_folds) picks the validation subjects: "
                                "drop val_subjects")
            if self.num_folds < 2 or self.fold is None or not 0 <= self.fold < self.num_folds:
                raise DataError(f"k-fold needs num_folds >= 2 and 0 <= fold < num_folds, "
                                f"got num_folds={self.num_folds}, fold={self.fold}")
        elif self.fold is not None and self.splits_file is None:
            raise DataError(f"fold {self.fold} is set but num_folds is not")
        for role, fraction in (("val", self.val_fraction), ("test", self.test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise DataError(f"{role}_fraction must be within [0, 1), got {fraction}")

    @property
    def validation(self) -> str:
        """What chooses the validation subjects: ``file``, ``folds``, ``subjects``, ``fraction`` or ``none``."""
        if self.splits_file is not None:
            return "file"
        if self.num_folds is not None:
            return "folds"
        return "subjects" if self.val_subjects else ("fraction" if self.val_fraction else "none")

    def replaced(self) -> list[str]:
        """Each fraction given that a list or k-fold takes the place of, said in a line."""
        notes = []
        if self.test_subjects and self.test_fraction:
            notes.append(f"test_subjects {list(self.test_subjects)} take the place of test_fraction "
                         f"{self.test_fraction}")
        if self.validation in ("file", "folds", "subjects") and self.val_fraction:
            by = {"file": f"fold {self.fold} of {self.splits_file}",
                  "folds": f"fold {self.fold} of num_folds {self.num_folds}"}.get(
                      self.validation, f"val_subjects {list(self.val_subjects)}")
            notes.append(f"{by} take the place of val_fraction {self.val_fraction}")
        return notes

    def as_dict(self) -> dict[str, Any]:
        """The rule as given, for ``split.json`` and :func:`make_split`'s keywords."""
        return {"val_subjects": list(self.val_subjects), "test_subjects": list(self.test_subjects),
                "train_subjects": None if self.train_subjects is None else list(self.train_subjects),
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "num_folds": self.num_folds, "fold": self.fold, "seed": self.seed, "fold_rule": self.fold_rule,
                "splits_file": self.splits_file}


FOLD_RULES = {"seeded": "the subjects outside the test set shuffled with split_seed, dealt into folds in turn",
              "nnunet": "nnU-Net's: the sorted case ids, KFold-shuffled with its fixed seed 12345 (as nnU-Net "
                        "writes splits_final.json), so folds and scores compare with nnU-Net's own"}
NNUNET_SPLIT_SEED = 12345  # nnU-Net v2's do_split: generate_crossval_split(sorted ids, seed=12345, n_splits=5)


def nnunet_folds(ids: Sequence[str], num_folds: int) -> list[list[str]]:
    """The validation ids of each fold as nnU-Net v2 draws them when it writes ``splits_final.json``:
    the ids sorted, their indices shuffled by ``RandomState(12345)`` and cut into ``num_folds``
    consecutive runs, the first ``len % num_folds`` one longer (scikit-learn's shuffled KFold);
    each fold's ids in sorted order."""
    ordered = sorted(ids)
    indices = np.arange(len(ordered))
    np.random.RandomState(NNUNET_SPLIT_SEED).shuffle(indices)
    sizes = np.full(num_folds, len(ordered) // num_folds)
    sizes[: len(ordered) % num_folds] += 1
    bounds = [0, *np.cumsum(sizes).tolist()]
    return [[ordered[i] for i in sorted(indices[start:stop])] for start, stop in itertools.pairwise(bounds)]


def read_splits_file(path: str | Path, fold: int) -> tuple[list[str], list[str]]:
    """``(training ids, validation ids)`` of ``fold`` in a split file of nnU-Net's format: a JSON
    list with one ``{"train": [...], "val": [...]}`` per fold (its ``splits_final.json``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: splits_file not found")
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the splits file ({error})") from error
    if not isinstance(folds, list) or not all(
            isinstance(f, dict) and all(isinstance(f.get(k), list) for k in ("train", "val")) for f in folds):
        raise DataError(f"{path}: expected nnU-Net's splits format, a list of {{\"train\": [...], \"val\": [...]}} "
                        "per fold")
    if not 0 <= fold < len(folds):
        raise DataError(f"{path}: has {len(folds)} folds (0 to {len(folds) - 1}), asked for fold {fold}")
    return [str(i) for i in folds[fold]["train"]], [str(i) for i in folds[fold]["val"]]


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
    fold_rule: str = "seeded",
    splits_file: str | None = None,
    where: str = "dataset",
) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` subject ids.

    Test: ``test_subjects``, else a seeded ``test_fraction`` of all subjects. Validation:
    fold ``fold`` of ``num_folds`` over the rest (shuffled with ``seed``), else
    ``val_subjects``, else a seeded ``val_fraction`` (of all subjects) drawn from the rest. Training: ``train_subjects``
    (which must not hold a validation or test subject), else everything not held out.
    The settings are checked as :class:`SplitRule` checks them; ``fold_rule`` picks how k-fold
    draws its folds (:data:`FOLD_RULES`); ``splits_file`` gives fold ``fold``'s training and
    validation subjects from a file in nnU-Net's format.
    """
    rule = SplitRule(tuple(map(str, val_subjects)), tuple(map(str, test_subjects)),
                     None if train_subjects is None else tuple(map(str, train_subjects)),
                     val_fraction, test_fraction, num_folds, fold, seed, fold_rule, splits_file)
    if rule.splits_file is not None:
        train_subjects, val_subjects = read_splits_file(rule.splits_file, int(rule.fold or 0))
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
        if rule.fold_rule == "nnunet":
            in_fold = set(nnunet_folds(pool, num_folds)[fold])
        else:
            order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
            in_fold = set(order[fold::num_folds])
        val = [s for s in pool if s in in_fold]
    elif rule.validation in ("subjects", "file"):
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
