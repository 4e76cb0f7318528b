import pytest

from datamodules import DataError
from datamodules.splits import SplitRule, make_split

SUBJECTS = [f"s{i}" for i in range(10)]


def test_explicit_lists() -> None:
    split = make_split(SUBJECTS, val_subjects=["s3"], test_subjects=["s0", "s9"])
    assert split == {"train": [f"s{i}" for i in range(1, 9) if i != 3], "val": ["s3"], "test": ["s0", "s9"]}


def test_seeded_fractions_are_reproducible_and_disjoint() -> None:
    a = make_split(SUBJECTS, val_fraction=0.2, test_fraction=0.3, seed=5)
    assert a == make_split(SUBJECTS, val_fraction=0.2, test_fraction=0.3, seed=5)
    assert len(a["test"]) == 3 and len(a["val"]) == 2 and len(a["train"]) == 5
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(SUBJECTS)
    others = [make_split(SUBJECTS, val_fraction=0.2, test_fraction=0.3, seed=s) for s in range(6, 12)]
    assert any(o["test"] != a["test"] for o in others)


def test_k_fold_validates_every_subject_exactly_once() -> None:
    folds = [make_split(SUBJECTS, test_subjects=["s0"], num_folds=3, fold=k, seed=1) for k in range(3)]
    validated = [s for f in folds for s in f["val"]]
    assert sorted(validated) == SUBJECTS[1:]  # every non-test subject, once
    assert sorted(len(f["val"]) for f in folds) == [3, 3, 3]
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and "s0" not in f["train"] + f["val"]
    assert folds[0] == make_split(SUBJECTS, test_subjects=["s0"], num_folds=3, fold=0, seed=1)
    assert folds[0]["val"] != make_split(SUBJECTS, test_subjects=["s0"], num_folds=3, fold=0, seed=2)["val"]


def test_contradictory_or_leaking_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="drop val_subjects"):
        make_split(SUBJECTS, val_subjects=["s1"], num_folds=5, fold=0)
    with pytest.raises(ValueError, match="0 <= fold < num_folds"):
        make_split(SUBJECTS, num_folds=5, fold=5)
    with pytest.raises(DataError, match=r"\['s2'\] are in both the training and the test set"):
        make_split(SUBJECTS, test_subjects=["s2"], train_subjects=["s1", "s2"])
    with pytest.raises(DataError, match=r"\['s1'\] are in both the training and the validation set"):
        make_split(SUBJECTS, val_subjects=["s1"], train_subjects=["s1", "s2"])
    with pytest.raises(DataError, match=r"data/x: validation subjects \['s42'\] not found"):
        make_split(SUBJECTS, val_subjects=["s42"], where="data/x")


def test_a_list_or_folds_take_the_place_of_a_presets_fraction_and_say_so() -> None:
    """The data presets hold out ``val_fraction: 0.2``; validation subjects or k-fold given on top
    replace that fraction (as test subjects replace a test fraction), and the rule says which."""
    with_list = make_split(SUBJECTS, val_subjects=["s3"], val_fraction=0.2, test_subjects=["s0"], test_fraction=0.3)
    assert with_list == make_split(SUBJECTS, val_subjects=["s3"], test_subjects=["s0"])
    assert with_list["val"] == ["s3"] and with_list["test"] == ["s0"] and len(with_list["train"]) == 8
    folds = [make_split(SUBJECTS, val_fraction=0.2, num_folds=2, fold=k, seed=4) for k in (0, 1)]
    assert folds == [make_split(SUBJECTS, num_folds=2, fold=k, seed=4) for k in (0, 1)]
    assert sorted(folds[0]["val"] + folds[1]["val"]) == SUBJECTS  # each subject validated once, 5 + 5
    assert SplitRule(("s3",), ("s0",), None, 0.2, 0.3).replaced() == [
        "test_subjects ['s0'] take the place of test_fraction 0.3",
        "val_subjects ['s3'] take the place of val_fraction 0.2"]
    assert SplitRule(val_fraction=0.2, num_folds=5, fold=1).replaced() == [
        "fold 1 of num_folds 5 take the place of val_fraction 0.2"]
    assert SplitRule(val_fraction=0.2).replaced() == [] and SplitRule(val_fraction=0.2).validation == "fraction"
    assert SplitRule(val_fraction=None).validation == "none" and SplitRule(test_fraction=None).test_fraction == 0.0


@pytest.mark.parametrize(("settings", "message"), [
    ({"val_subjects": ("s1",), "num_folds": 5, "fold": 0}, r"k-fold cross-validation \(num_folds\) picks the "
                                                         "validation subjects: drop val_subjects"),
    ({"fold": 2}, "fold 2 is set but num_folds is not"),
    ({"num_folds": 1, "fold": 0}, "k-fold needs num_folds >= 2 and 0 <= fold < num_folds, got num_folds=1, fold=0"),
    ({"num_folds": 3}, "k-fold needs num_folds >= 2 and 0 <= fold < num_folds, got num_folds=3, fold=None"),
    ({"val_fraction": 1.5}, r"val_fraction must be within \[0, 1\), got 1.5"),
    ({"test_fraction": -0.1}, r"test_fraction must be within \[0, 1\), got -0.1"),
])
def test_contradictions_are_refused_when_the_rule_is_built_not_when_the_split_is_drawn(settings: dict,
                                                                                       message: str) -> None:
    with pytest.raises(DataError, match=f"^{message}$"):
        SplitRule(**settings)
