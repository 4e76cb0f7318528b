"""Training / validation / test splits: explicit lists, a seeded random split, or k-fold.

The same settings and subject list always give the same split; ``train.py`` saves the split
of every run (``split.json``) beside its config.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.io import DataError


def _draw(pool: list[str], fraction: float, total: int, rng: np.random.Generator, role: str) -> list[str]:
    """``fraction`` of ``total`` subjects (at least one), drawn from ``pool``, in the pool's order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{role}_fraction must be within (0, 1), got {fraction}")
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
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
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
    """
    subjects = [str(s) for s in subjects]
    known = set(subjects)

    def check(ids: Sequence[str], role: str) -> list[str]:
        ids = [str(i) for i in ids]
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"{where}: {role} subjects {unknown} not found; available: {subjects}")
        return ids

    rng = np.random.default_rng(seed)
    if test_subjects and test_fraction:
        raise ValueError("give test_subjects or test_fraction, not both")
    test = check(test_subjects, "test") if test_subjects else (
        _draw(subjects, test_fraction, len(subjects), rng, "test") if test_fraction else [])
    pool = [s for s in subjects if s not in set(test)]

    if num_folds is not None:
        if val_subjects or val_fraction:
            raise ValueError("k-fold cross-validation picks the validation subjects: drop val_subjects/val_fraction")
        if num_folds < 2 or fold is None or not 0 <= fold < num_folds:
            raise ValueError(f"k-fold needs num_folds >= 2 and 0 <= fold < num_folds, got {num_folds=}, {fold=}")
        if len(pool) < num_folds:
            raise DataError(f"{where}: {len(pool)} subjects (after the test set) cannot make {num_folds} folds")
        order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
        in_fold = set(order[fold::num_folds])
        val = [s for s in pool if s in in_fold]
    elif fold is not None:
        raise ValueError("fold is set but num_folds is not")
    elif val_subjects and val_fraction:
        raise ValueError("give val_subjects or val_fraction, not both")
    elif val_subjects:
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
