import pytest

from datamodules import DataError
from datamodules.splits import SplitRule, make_split, nnunet_folds

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


@pytest.mark.parametrize(("count", "folds"), [(10, 5), (11, 5), (7, 3), (23, 5)])
def test_nnunet_fold_rule_draws_exactly_nnunets_folds(count: int, folds: int) -> None:
    """nnU-Net v2 writes splits_final.json with scikit-learn's shuffled KFold (seed 12345) over the
    sorted case ids; ``fold_rule: nnunet`` draws the same folds without scikit-learn's help, from
    the ids in any order."""
    from sklearn.model_selection import KFold

    ids = [f"case_{i:03d}" for i in range(count)]
    ordered = sorted(ids)
    expected = [[ordered[i] for i in val] for _, val in KFold(folds, shuffle=True, random_state=12345).split(ordered)]
    assert nnunet_folds(list(reversed(ids)), folds) == expected
    splits = [make_split(ids[::-1], num_folds=folds, fold=k, fold_rule="nnunet", seed=7) for k in range(folds)]
    assert [sorted(split["val"]) for split in splits] == expected  # the split seed plays no part: nnU-Net's is fixed
    assert all(sorted(split["train"] + split["val"]) == ordered for split in splits)


def test_a_splits_file_in_nnunets_format_gives_each_folds_subjects(tmp_path) -> None:
    import json

    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["s1", "s2", "s3"], "val": ["s4", "s5"]},
                                {"train": ["s4", "s5", "s6"], "val": ["s1", "s2"]}]))
    split = make_split(SUBJECTS, splits_file=str(path), fold=1, test_subjects=["s9"], val_fraction=0.2)
    assert split == {"train": ["s4", "s5", "s6"], "val": ["s1", "s2"], "test": ["s9"]}  # the rest unused
    assert SplitRule(val_fraction=0.2, splits_file=str(path), fold=1).replaced() == [
        f"fold 1 of {path} take the place of val_fraction 0.2"]
    with pytest.raises(DataError, match=r"\['s4'\] are in both the training and the test set"):
        make_split(SUBJECTS, splits_file=str(path), fold=1, test_subjects=["s4"])
    with pytest.raises(DataError, match=rf"^{path}: has 2 folds \(0 to 1\), asked for fold 2$"):
        make_split(SUBJECTS, splits_file=str(path), fold=2)
    path.write_text(json.dumps({"train": ["s1"], "val": ["s2"]}))
    with pytest.raises(DataError, match=r"expected nnU-Net's splits format, a list of \{\"train\": \[\.\.\.\], "):
        make_split(SUBJECTS, splits_file=str(path), fold=0)
    path.write_text("[{")
    with pytest.raises(DataError, match=rf"^{path}: cannot read the splits file"):
        make_split(SUBJECTS, splits_file=str(path), fold=0)
    with pytest.raises(DataError, match=r"nowhere.json: splits_file not found$"):
        make_split(SUBJECTS, splits_file=str(tmp_path / "nowhere.json"), fold=0)


@pytest.mark.parametrize(("settings", "message"), [
    ({"splits_file": "s.json", "fold": 0, "num_folds": 5}, "splits_file s.json holds each fold's training and "
                                                           "validation subjects: drop num_folds"),
    ({"splits_file": "s.json", "fold": 0, "val_subjects": ("s1",), "train_subjects": ("s2",)},
     "splits_file s.json holds each fold's training and validation subjects: drop val_subjects, train_subjects"),
    ({"splits_file": "s.json"}, r"splits_file s.json needs the fold to use: fold 0, 1, \.\.\."),
    ({"fold_rule": "nnunet"}, r"fold_rule nnunet is a rule of k-fold: set num_folds \(nnU-Net's 5\) and fold"),
    ({"fold_rule": "random", "num_folds": 5, "fold": 0}, r"fold_rule must be one of \['seeded', 'nnunet'\], "
                                                         "got 'random'"),
])
def test_split_files_and_fold_rules_that_contradict_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(DataError, match=f"^{message}$"):
        SplitRule(**settings)


def test_a_datamodule_takes_nnunets_splits_file_and_says_what_it_leaves_unused(tiny_demo_dir, tmp_path) -> None:
    import json

    from core.io import DataWarning
    from datamodules import ISeg2017DataModule

    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["subject-1"], "val": ["subject-3"]}]))
    data = ISeg2017DataModule(str(tiny_demo_dir), val_subjects=[], test_subjects=["subject-4"], splits_file=str(path),
                              fold=0, cache_dir=None)
    with pytest.warns(DataWarning, match=rf"1 subjects are in no list of fold 0 of {path} and not in the test set; "
                                         "unused: subject-2"):
        split = data.split()
    assert {role: [s.subject_id for s in members] for role, members in split.items()} == {
        "train": ["subject-1"], "val": ["subject-3"], "test": ["subject-4"]}
    with pytest.warns(DataWarning, match="unused: subject-2"):
        assert data.split_summary()["rule"]["splits_file"] == str(path)
