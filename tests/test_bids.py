"""BIDS datasets in and out: sessions as subjects, modalities by suffix and entities, labels
from a derivatives pipeline's dseg files, splits by participant, predictions as a derivative."""

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import BIDS_TISSUES, write_bids, write_nifti

from core.bids import BIDS_NAMES, derivative_files, read_dseg_tsv, unit_parts
from core.export import stamp_of
from core.io import DataError, DataWarning
from core.volumes import Volume, load_subject
from datamodules import BIDSDataModule
from datamodules.bids import parse_modality

SMALL = {"patch_size": (8, 8, 8), "cache_dir": None}
SESSIONS = ["sub-01_ses-1", "sub-01_ses-2", "sub-03_ses-1", "sub-04_ses-1", "sub-05_ses-1"]


@pytest.fixture(scope="module")
def bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bids(tmp_path_factory.mktemp("bids"))


def dm(bids: Path, **kwargs: object) -> BIDSDataModule:
    return BIDSDataModule(str(bids), **{"modalities": ["T1w", "T2w"], "labels_dir": "derivatives/manual",
                                        **SMALL, **kwargs})


def test_modalities_are_suffixes_after_optional_entities() -> None:
    assert parse_modality("T1w") == ("T1w", {})
    assert parse_modality("acq-mprage_ce-gadolinium_T1w") == ("T1w", {"acquisition": "mprage",
                                                                       "ceagent": "gadolinium"})
    assert parse_modality("run-2_FLAIR") == ("FLAIR", {"run": 2})
    with pytest.raises(ValueError, match="unknown entity 'foo'"):
        parse_modality("foo-bar_T1w")
    with pytest.raises(ValueError, match="expected a BIDS suffix"):
        parse_modality("T1w.nii.gz")


def test_sessions_are_subjects_and_what_is_left_out_is_said(bids: Path) -> None:
    with pytest.warns(DataWarning) as caught:
        subjects = dm(bids).subjects()
    assert list(subjects) == SESSIONS
    messages = [str(w.message) for w in caught]
    assert f"{bids}: skipping sub-02_ses-1: no T2w image" in messages
    assert "sub-03_ses-1: 2 runs of T1w; using sub-03_ses-1_run-2_T1w.nii.gz (run: last)" in messages
    first = subjects["sub-01_ses-2"]
    assert [p.name for p in first.images] == ["sub-01_ses-2_T1w.nii.gz", "sub-01_ses-2_T2w.nii.gz"]
    assert first.label.name == "sub-01_ses-2_desc-tissue_dseg.nii.gz"
    with pytest.warns(DataWarning, match=r"using sub-03_ses-1_run-1_T1w.nii.gz \(run: first\)"):
        assert dm(bids, run="first").subjects()["sub-03_ses-1"].images[0].name == "sub-03_ses-1_run-1_T1w.nii.gz"
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"sub-02_ses-1: no T2w image \(require_all"):
        dm(bids, require_all=True).subjects()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert "sub-02_ses-1" in dm(bids, modalities=["T1w"]).subjects()  # T1w alone: sub-02 is in


def names_only_tree(root: Path) -> Path:
    """A BIDS tree of empty files (listing reads names only): sub-01 with sessions 1, 2 and 10;
    sub-02 without sessions, two T1w acquisitions and two label maps (desc-tissue, desc-other);
    sub-03 with functional data only; sub-04 with a FLAIR alone."""
    manual = root / "derivatives" / "manual"
    files = [*(f"sub-01/ses-{s}/anat/sub-01_ses-{s}_{m}.nii.gz" for s in (1, 2, 10) for m in ("T1w", "T2w")),
             "sub-02/anat/sub-02_acq-mprage_T1w.nii.gz", "sub-02/anat/sub-02_acq-fast_T1w.nii.gz",
             "sub-03/func/sub-03_task-rest_bold.nii.gz", "sub-04/anat/sub-04_FLAIR.nii.gz"]
    labels = [*(f"sub-01/ses-{s}/anat/sub-01_ses-{s}_desc-tissue_dseg.nii.gz" for s in (1, 2, 10)),
              "sub-02/anat/sub-02_desc-tissue_dseg.nii.gz", "sub-02/anat/sub-02_desc-other_dseg.nii.gz"]
    for path in [root / f for f in files] + [manual / f for f in labels]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (root / "dataset_description.json").write_text('{"Name": "names", "BIDSVersion": "1.9.0"}')
    (manual / "dataset_description.json").write_text('{"Name": "manual", "BIDSVersion": "1.9.0", '
                                                     '"DatasetType": "derivative", "GeneratedBy": [{"Name": "x"}]}')
    (manual / "dseg.tsv").write_text("index\tname\n1\tCSF\n")
    return root


def test_entities_pick_among_acquisitions_and_sessions_sort_naturally(tmp_path: Path) -> None:
    root = names_only_tree(tmp_path / "bids")

    def found(modalities: list[str], labels: bool = True, **kwargs: object) -> tuple[list[str], list[str]]:
        module = BIDSDataModule(str(root), modalities=modalities, labels_dir="derivatives/manual", cache_dir=None,
                                **kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            subjects = module.find_subjects(root, require_labels=labels)
        said = [str(w.message).removeprefix(f"{root}: ") for w in caught if w.category is DataWarning]
        return [f"{s.subject_id}:{'+'.join(p.name for p in s.images)}" for s in subjects], said

    with pytest.raises(DataError, match=r"sub-02 has several T1w images \['sub-02_acq-fast_T1w.nii.gz', "
                                        r"'sub-02_acq-mprage_T1w.nii.gz'\]; name the one"):
        found(["T1w"], labels=False)
    assert found(["acq-mprage_T1w"], labels=False) == (
        ["sub-02:sub-02_acq-mprage_T1w.nii.gz"],
        [f"skipping {unit}: no acq-mprage_T1w image" for unit in ("sub-01_ses-1", "sub-01_ses-2", "sub-01_ses-10",
                                                                  "sub-03", "sub-04")])  # in the natural order
    with pytest.raises(DataError, match=r"sub-02 has several dseg images"):  # two label maps, none named
        found(["T2w"])
    sessions, said = found(["T2w"], label_entities={"desc": "tissue"})
    assert sessions == [f"sub-01_ses-{s}:sub-01_ses-{s}_T2w.nii.gz" for s in (1, 2, 10)]  # 10 after 2
    assert said == ["skipping sub-02: no T2w image", "skipping sub-03: no T2w image", "skipping sub-04: no T2w image"]


def test_the_label_space_comes_from_dseg_tsv_and_labels_are_read(bids: Path) -> None:
    data = dm(bids)
    assert data.label_space.class_names == ("background", "CSF", "GM", "WM")
    assert read_dseg_tsv(bids / "derivatives" / "manual" / "dseg.tsv") == {0: "background", **BIDS_TISSUES}
    with pytest.warns(DataWarning):
        subject = data.subjects()["sub-04_ses-1"]
    volume = data._load([subject])[0]
    assert volume.image.shape[0] == 2 and set(np.unique(volume.label).tolist()) == {0, 1, 2, 3}


def test_splits_keep_a_participants_sessions_together(bids: Path) -> None:
    with pytest.warns(DataWarning):
        split = dm(bids, val_subjects=["sub-01_ses-1"], test_subjects=["sub-05"]).split()
    assert [s.subject_id for s in split["val"]] == ["sub-01_ses-1", "sub-01_ses-2"]
    assert [s.subject_id for s in split["test"]] == ["sub-05_ses-1"]
    with pytest.warns(DataWarning):  # participant labels as BIDS Apps take them, without sub-
        assert dm(bids, val_subjects=["01_ses-1"], test_subjects=["05"]).split() == split
    for seed in range(8):
        with pytest.warns(DataWarning):
            split = dm(bids, val_fraction=0.25, split_seed=seed).split()
        participants = {role: {unit_parts(s.subject_id)[0] for s in members} for role, members in split.items()}
        assert not participants["train"] & participants["val"], seed


def test_a_missing_labels_dir_or_dseg_tsv_is_one_line(bids: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no labels_dir given"):
        dm(bids, labels_dir=None).subjects()
    with pytest.raises(DataError, match=r"nowhere/dseg.tsv: file not found"):
        _ = dm(bids, labels_dir=str(tmp_path / "nowhere")).label_space


def test_labels_from_an_fmriprep_derivative_its_aseg_or_its_tissue_map(bids: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """fMRIPrep keeps several label maps per session (tissues, ``desc-aseg``, ``desc-aparcaseg``,
    ``space-MNI...``), describes aseg in ``desc-aseg_dseg.tsv`` at its top and its tissue map in
    no table: ``label_entities`` picks one (``null``: the entity absent), the table is found by
    BIDS' inheritance, and ``labels`` names the values where there is none."""
    import shutil

    copy = tmp_path / "bids"
    shutil.copytree(bids, copy)
    prep = copy / "derivatives" / "fmriprep"
    prep.mkdir()
    (prep / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    (prep / "desc-aseg_dseg.tsv").write_text("index\tname\n2\tLeft-Cerebral-White-Matter\n3\tLeft-Cerebral-Cortex\n"
                                             "4\tLeft-Lateral-Ventricle\n")
    for tissue in (copy / "derivatives" / "manual").rglob("*_desc-tissue_dseg.nii.gz"):
        anat = prep / tissue.parent.relative_to(copy / "derivatives" / "manual")
        anat.mkdir(parents=True)
        stem = tissue.name.removesuffix("_desc-tissue_dseg.nii.gz")
        image = nib.load(tissue)
        values = np.asarray(image.dataobj)  # manual 1 CSF, 2 GM, 3 WM -> fMRIPrep's 1 GM, 2 WM, 3 CSF; aseg's 4, 3, 2
        for name, mapping in ((f"{stem}_dseg", {1: 3, 2: 1, 3: 2}), (f"{stem}_desc-aseg_dseg", {1: 4, 2: 3, 3: 2}),
                              (f"{stem}_space-MNI152NLin2009cAsym_dseg", {1: 3, 2: 1, 3: 2})):
            mapped = np.zeros_like(values)
            for old, new in mapping.items():
                mapped[values == old] = new
            nib.save(nib.Nifti1Image(mapped, image.affine), anat / f"{name}.nii.gz")
    options = {"labels_dir": "derivatives/fmriprep", "require_all": True, "modalities": ["T1w"]}
    with pytest.warns(DataWarning, match="2 runs of T1w"):
        aseg = dm(copy, **options, label_entities={"desc": "aseg"})
        subjects = aseg.subjects()
    assert aseg.label_space.class_names == ("background", "Left-Cerebral-White-Matter", "Left-Cerebral-Cortex",
                                            "Left-Lateral-Ventricle")
    assert subjects["sub-01_ses-2"].label.name == "sub-01_ses-2_desc-aseg_dseg.nii.gz"
    assert set(np.unique(aseg._load([subjects["sub-01_ses-2"]])[0].label).tolist()) == {0, 1, 2, 3}
    tissue = {"label_entities": {"desc": None, "space": None}}
    with pytest.raises(DataError, match=r"fmriprep/dseg\.tsv: file not found \(the table of the \*_dseg label "
                                        r"values: columns index and name; for a pipeline that ships none, give "
                                        r"their names as labels: \{1: GM, 2: WM, 3: CSF\}\)$"):
        _ = dm(copy, **options, **tissue).label_space
    with pytest.warns(DataWarning, match="2 runs of T1w"):
        named = dm(copy, **options, **tissue, labels={1: "GM", 2: "WM", 3: "CSF"})
        subjects = named.subjects()
    assert named.label_space.class_names == ("background", "GM", "WM", "CSF")
    assert subjects["sub-04_ses-1"].label.name == "sub-04_ses-1_dseg.nii.gz"  # not aseg, not the MNI map
    truth = np.asarray(nib.load(copy / "derivatives/manual/sub-04/ses-1/anat/sub-04_ses-1_desc-tissue_dseg.nii.gz"
                                ).dataobj)
    loaded = named._load([subjects["sub-04_ses-1"]])[0].label
    assert set(np.unique(loaded).tolist()) == {0, 1, 2, 3}
    assert (loaded == 3).sum() == (truth == 1).sum() and (loaded == 1).sum() == (truth == 2).sum()  # CSF, GM
    from train import run_cli  # the same through the CLI and the preset: null entities, integer keys in YAML

    cli = run_cli(["--config", "configs/datasets/bids.yaml", "--data.init_args.data_dir", str(copy),
                   "--data.init_args.labels_dir", "derivatives/fmriprep", "--data.init_args.modalities", "[T1w]",
                   "--data.init_args.label_entities", "{desc: null, space: null}",
                   "--data.init_args.labels", "{1: GM, 2: WM, 3: CSF}", "--trainer.logger", "false"],
                  run=False, save_config=False)
    assert cli.datamodule.label_entities == {"desc": None, "space": None}
    assert cli.model.hparams.label_space["classes"] == {"background": 0, "GM": 1, "WM": 2, "CSF": 3}
    with pytest.raises(DataError, match=r"sub-01_ses-1 has several dseg images .* name the one to use with entities"):
        dm(copy, **options).subjects()
    with pytest.raises(DataError, match=r"name the one to use with entities \(label_entities: \{desc: aseg\}, or "
                                        r"\{desc: null, space: null\} for the map without those entities\)$"):
        dm(copy, **options).subjects()
    # Its preprocessed scans as the input: the native-space ones among their MNI copies.
    for raw in sorted(copy.glob("sub-*/ses-*/anat/*_T1w.nii.gz")):
        stem = raw.name.split("_run-")[0].removesuffix("_T1w.nii.gz")
        anat = prep / raw.parent.relative_to(copy)
        for name in (f"{stem}_desc-preproc_T1w", f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_T1w",
                     f"{stem}_desc-brain_mask"):
            shutil.copy(raw, anat / f"{name}.nii.gz")
    preprocessed = {"labels_dir": ".", "modalities": ["desc-preproc_T1w"], "label_entities": {"desc": "aseg"}}
    with pytest.raises(DataError, match=r"has several desc-preproc_T1w images \['sub-01_ses-1_desc-preproc_T1w.*"
                                        r"\(acq-<label>_desc-preproc_T1w, or image_entities: \{space: null\} for the "
                                        r"images without one\)$"):
        dm(prep, **preprocessed).subjects()
    subjects = dm(prep, **preprocessed, image_entities={"space": None}).subjects()
    assert [p.name for p in subjects["sub-03_ses-1"].images] == ["sub-03_ses-1_desc-preproc_T1w.nii.gz"]
    assert len(subjects) == 6 and subjects["sub-03_ses-1"].label.name == "sub-03_ses-1_desc-aseg_dseg.nii.gz"
    # Scored against it: --gt-entities picks the ground truth among its maps, and its table.
    import evaluate

    ours = copy / "derivatives" / "ours"
    for aseg in prep.rglob("*_desc-aseg_dseg.nii.gz"):
        (ours / aseg.parent.relative_to(prep)).mkdir(parents=True)
        shutil.copy(aseg, ours / aseg.parent.relative_to(prep) / aseg.name.replace("desc-aseg", "space-orig"))
    shutil.copy(prep / "dataset_description.json", ours / "dataset_description.json")
    common = ["--pred", str(ours), "--gt", str(prep), "--dataset", "dseg", "--output", str(tmp_path / "scores")]
    assert evaluate.main([*common, "--gt-entities", "desc=aseg"]) == 0
    with open(tmp_path / "scores" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["structure"] for r in rows} == {"Left-Cerebral-White-Matter", "Left-Cerebral-Cortex",
                                              "Left-Lateral-Ventricle"}
    assert len(rows) == 18 and all(float(r["dice"]) == 1.0 for r in rows)  # 6 sessions x 3 structures
    capsys.readouterr()
    labels = ["--dataset", "labels", "--labels", "0:background,2:WM,3:GM,4:ventricle"]
    for extra, said in (
            (["--gt-entities", "space="], "fmriprep/dseg.tsv: file not found (a derivatives pipeline describes its "
             "*_dseg values in dseg.tsv; for one that ships none: --dataset labels --labels '0:background,1:GM,"),
            ([*labels, "--gt-entities", "space="], "two label maps for sub-01_ses-1: "
             "sub-01_ses-1_desc-aseg_dseg.nii.gz, sub-01_ses-1_dseg.nii.gz\n"),
            (labels, "(choose by entities: --gt-entities desc=aseg, space= for none)")):
        assert evaluate.main([*common, *extra]) == 2, extra
        assert said in capsys.readouterr().err, extra
    # The pipeline's own map scored as a method: --pred-entities picks it among the prediction's maps.
    as_method = ["--pred", str(prep), "--gt", str(ours), "--dataset", "labels", "--labels", "0:background,2:WM,3:GM,"
                 "4:ventricle", "--output", str(tmp_path / "method")]
    assert evaluate.main([*as_method, "--pred-entities", "desc=aseg", "space="]) == 0
    with open(tmp_path / "method" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18 and all(float(r["dice"]) == 1.0 for r in rows)
    capsys.readouterr()
    assert evaluate.main(as_method) == 2
    assert "(choose by entities: --pred-entities desc=aseg, space= for none)" in capsys.readouterr().err
    assert evaluate.main(["--pred", str(tmp_path / "scores"), "--pred-entities", "desc=aseg", *common[2:],
                          "--gt-entities", "desc=aseg"]) == 2
    assert ("--pred-entities picks among a BIDS derivative's label maps; this is not one"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit) as exited:
        evaluate.main([*common, "--gt-entities", "desc"])
    assert exited.value.code == 2 and "'desc' is not KEY=VALUE with a BIDS entity key" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"fmriprep/dseg\.tsv: file not found, nor space-MNI_desc-x_dseg\.tsv, "
                                        r"space-MNI_dseg\.tsv, desc-x_dseg\.tsv \("):  # most specific first
        _ = dm(copy, **options, label_entities={"desc": "x", "space": "MNI"}).label_space


def test_unfetched_annex_files_are_said_before_any_work_and_fetched_ones_can_be_chosen(
        bids: Path, tmp_path: Path) -> None:
    """pybids lists a DataLad dataset's unfetched files (symbolic links to absent content): the
    DataModule says so when it lists its subjects, naming every such file, before any volume is
    read; ``predict.py --subjects`` then segments the participants whose files are there."""
    import shutil

    from datamodules.folders import subjects_in_folder

    copy = tmp_path / "bids"
    shutil.copytree(bids, copy)
    for name in ("sub-04/ses-1/anat/sub-04_ses-1_T2w.nii.gz", "sub-05/ses-1/anat/sub-05_ses-1_T1w.nii.gz"):
        (copy / name).unlink()
        (copy / name).symlink_to(tmp_path / ".git" / "annex" / "objects" / Path(name).name)
    with pytest.warns(DataWarning), pytest.raises(DataError) as error:
        dm(copy).subjects()
    assert str(error.value).startswith(f"2 input files cannot be read: {copy}/sub-04/ses-1/anat/sub-04_ses-1_T2w"
                                       ".nii.gz: a symbolic link to ")
    record = {"class_path": "datamodules.BIDSDataModule", "init_args": {"modalities": ["T1w", "T2w"]}}
    with pytest.warns(DataWarning):
        chosen = subjects_in_folder(copy, record, ["T1w", "T2w"], "model.ckpt", only=["sub-01", "sub-03"])
    assert [s.subject_id for s in chosen] == ["sub-01_ses-1", "sub-01_ses-2", "sub-03_ses-1"]
    with pytest.warns(DataWarning), pytest.raises(DataError, match="sub-05_ses-1_T1w.nii.gz: a symbolic link"):
        subjects_in_folder(copy, record, ["T1w", "T2w"], "model.ckpt", only=["sub-05"])


def test_derivative_names_and_sidecars() -> None:
    from core.labels import LabelSpace

    assert BIDS_NAMES.files("sub-01_ses-2", probabilities=True) == [
        "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_space-orig_probseg.nii.gz"]
    assert BIDS_NAMES.files("sub-07") == ["sub-07/anat/sub-07_space-orig_dseg.nii.gz"]
    assert BIDS_NAMES.image_sidecars("sub-01_ses-2", probabilities=True) == [
        "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.json",
        "sub-01/ses-2/anat/sub-01_ses-2_space-orig_probseg.json"]
    sidecars = BIDS_NAMES.sidecars(LabelSpace.from_values({0: "background", **BIDS_TISSUES}))
    assert sidecars["dseg.tsv"] == "index\tname\n0\tbackground\n1\tCSF\n2\tGM\n3\tWM\n"
    description = json.loads(sidecars["dataset_description.json"])
    assert description["DatasetType"] == "derivative" and "DatasetLinks" not in description  # no inputs named
    (generated,) = description["GeneratedBy"]
    assert generated["Name"] == "brain-mri-segmentation" and generated["Version"] == "0.2.0"
    assert generated["Description"].startswith("git commit ")
    assert sidecars[".bidsignore"] == ("/volumes.tsv\n/predictions.jsonl\n/scores.csv\n/summary.csv\n"
                                     "/summary.md\n/scoring.json\n")


def test_train_predict_as_a_derivative_and_evaluate_derivative_against_derivative(bids: Path,
                                                                                 tmp_path: Path) -> None:
    """A BIDS tree (two sessions for sub-01, sub-02 without T2w) -> train.py fit -> train.py
    predict into derivatives/brain-mri-segmentation -> evaluate.py against derivatives/manual."""
    import evaluate
    from train import run_cli

    output = tmp_path / "derivatives" / "brain-mri-segmentation"
    common = ["--config", "configs/datasets/bids.yaml", "--data.init_args.data_dir", str(bids),
              "--data.init_args.val_subjects", "[sub-04]", "--data.init_args.val_fraction", "0",
              "--data.init_args.test_subjects", "[sub-01]",
              "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.samples_per_volume", "2",
              "--data.init_args.num_workers", "0", "--data.init_args.cache_dir", "null",
              "--model.network_kwargs", "{base_features: 2}", "--trainer.max_epochs", "1",
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.warns(DataWarning):
        run_cli(["fit", *common, "--checkpoint.dirpath", str(tmp_path / "checkpoints")], save_config=False)
        run_cli(["predict", *common, "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"),
                 "--prediction_writer.output_dir", str(output)], save_config=False)
    written = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert written == [".bidsignore", "dataset_description.json", "dseg.tsv", "predictions.jsonl",
                       "sub-01/ses-1/anat/sub-01_ses-1_space-orig_dseg.json",
                       "sub-01/ses-1/anat/sub-01_ses-1_space-orig_dseg.nii.gz",
                       "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.json",
                       "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.nii.gz", "volumes.tsv"]
    description = json.loads((output / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["DatasetLinks"] == {"raw": bids.as_uri()}  # the derivative lies outside the dataset
    sidecar = json.loads((output / "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.json").read_text())
    assert sidecar["Manual"] is False
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert sidecar["Description"] == f"brain-mri-segmentation prediction (automated, by the network of {checkpoint})"
    assert sidecar["Sources"] == ["bids:raw:sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
                                  "bids:raw:sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz"]
    (logged,) = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert logged["checkpoint"] == str(checkpoint) and logged["subjects"] == ["sub-01_ses-1", "sub-01_ses-2"]
    with open(output / "volumes.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["subject"] for r in rows] == ["sub-01_ses-1", "sub-01_ses-2"]
    truth = bids / "derivatives" / "manual" / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-tissue_dseg.nii.gz"
    prediction = nib.load(output / "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.nii.gz")
    voxel_ml = float(np.prod(prediction.header.get_zooms()[:3])) / 1000
    for value, name in BIDS_TISSUES.items():  # the TSV's volumes are those of the written segmentation
        counted = int((np.asarray(prediction.dataobj) == value).sum()) * voxel_ml
        assert float(rows[1][name]) == pytest.approx(counted, abs=1e-3), name
    assert prediction.shape == nib.load(truth).shape and np.allclose(prediction.affine, nib.load(truth).affine)
    assert set(derivative_files(output)) == {"sub-01_ses-1", "sub-01_ses-2"}
    import predict  # the checkpoint alone reads the BIDS tree and writes the same derivative

    with pytest.warns(DataWarning, match="skipping sub-02_ses-1: no T2w image"):
        again = predict.predict(tmp_path / "checkpoints" / "last.ckpt", [bids], tmp_path / "again")
    assert [p.relative_to(tmp_path / "again").as_posix() for p in again][:2] == written[5:8:2]
    assert json.loads(again[1].with_name("sub-01_ses-2_space-orig_dseg.json").read_text()) == sidecar  # the same
    np.testing.assert_array_equal(np.asarray(nib.load(again[1]).dataobj), np.asarray(prediction.dataobj))
    with pytest.warns(DataWarning, match="skipping sub-02_ses-1"):  # a participant stands for its sessions
        chosen = predict.predict(tmp_path / "checkpoints" / "last.ckpt", [bids], tmp_path / "one",
                                 subjects=["sub-01", "sub-04_ses-1"])
    assert [p.name for p in chosen] == [f"{s}_space-orig_dseg.nii.gz" for s in ("sub-01_ses-1", "sub-01_ses-2",
                                                                              "sub-04_ses-1")]
    with pytest.warns(DataWarning, match="skipping sub-02_ses-1"):  # BIDS Apps' option and labels
        predict.main(["--checkpoint", str(tmp_path / "checkpoints" / "last.ckpt"), "--input", str(bids),
                      "--output", str(tmp_path / "label"), "--participant_label", "04"])
    assert [p.name for p in (tmp_path / "label").rglob("*.nii.gz")] == ["sub-04_ses-1_space-orig_dseg.nii.gz"]
    assert evaluate.main(["--pred", str(output), "--gt", str(bids / "derivatives" / "manual"), "--dataset", "dseg",
                          "--output", str(tmp_path / "scores")]) == 0
    with open(tmp_path / "scores" / "scores.csv") as handle:
        scored = [(r["subject"], r["structure"]) for r in csv.DictReader(handle)]
    assert scored == [(s, t) for s in ("sub-01_ses-1", "sub-01_ses-2") for t in ("CSF", "GM", "WM")]
    # Scored into the derivative itself (the default): every table at its top that BIDS has no
    # name for is in its .bidsignore, so the BIDS validator passes over them.
    assert evaluate.main(["--pred", str(output), "--gt", str(bids / "derivatives" / "manual"),
                          "--dataset", "dseg"]) == 0
    tables = {p.name for p in output.iterdir() if p.is_file()} - {".bidsignore", "dataset_description.json", "dseg.tsv"}
    assert tables == {"volumes.tsv", "predictions.jsonl", "scores.csv", "summary.csv", "summary.md", "scoring.json"}
    assert {line.lstrip("/") for line in (output / ".bidsignore").read_text().split()} == tables


def test_a_model_of_any_contrast_segments_a_bids_tree_by_the_suffix_asked_for(bids: Path, tmp_path: Path) -> None:
    """Trained from the label maps (validated on T1w), predict.py segments the tree's T2w images
    (``--contrast T2w``) into the same derivative layout, named by the contrast read; sub-02,
    which has no T2w, is skipped. Its T1w segmentations lie beside them, and train.py predict
    names them alike."""
    import predict
    from train import run_cli

    common = ["--config", "configs/datasets/bids.yaml", "--config", "configs/recipes/synthseg.yaml",
              "--data.init_args.data_dir", str(bids), "--data.init_args.target_spacing", "[1.0, 1.0, 1.0]",
              "--data.init_args.cache_dir", "null", "--data.init_args.num_workers", "0",
              "--model.network_kwargs", "{base_features: 2}", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.warns(DataWarning):
        run_cli(["fit", *common, "--data.init_args.modalities", "[T1w]", "--data.init_args.val_subjects", "[sub-04]",
                 "--data.init_args.val_fraction", "0", "--data.init_args.patch_size", "[16, 16, 16]",
                 "--data.init_args.samples_per_volume", "1", "--trainer.max_epochs", "1",
                 "--trainer.precision", "32-true", "--checkpoint.dirpath", str(tmp_path / "checkpoints")],
                save_config=False)
    checkpoint, output = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "derivative"
    with pytest.warns(DataWarning, match="skipping sub-02_ses-1: no T2w image"):
        written = predict.predict(checkpoint, [bids], output, contrast="T2w")
    assert [p.relative_to(output).as_posix() for p in written] == [
        f"{s.replace('_', '/')}/anat/{s}_space-orig_desc-T2w_dseg.nii.gz" for s in SESSIONS]
    header = nib.load(written[0]).header
    assert bytes(header["descrip"]).rstrip(b"\0").endswith(b"; any-contrast model")
    # The T1w images (the contrast it was validated on) into the same derivative: beside, not over, the T2w's
    with pytest.warns(DataWarning, match="2 runs of T1w"):
        t1 = predict.predict(checkpoint, [bids], output, subjects=["sub-01", "sub-02"])
    assert [p.relative_to(output).as_posix() for p in t1] == [
        f"{s.replace('_', '/')}/anat/{s}_space-orig_desc-T1w_dseg.nii.gz"
        for s in ("sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1")]
    assert all(p.is_file() for p in written)
    with pytest.warns(DataWarning, match="skipping sub-01_ses-1: no run-1_T1w image"):  # entities: alphanumeric
        (first_run,) = predict.predict(checkpoint, [bids], tmp_path / "other", bids_modalities=["run-1_T1w"])
    assert first_run.name == "sub-03_ses-1_space-orig_desc-run1T1w_dseg.nii.gz"
    assert set(derivative_files(output, {"desc": "T2w"})) == set(SESSIONS)
    with pytest.raises(DataError, match=r"two label maps for sub-01_ses-1: sub-01_ses-1_space-orig_desc-T1w_dseg"):
        derivative_files(output)
    with pytest.warns(DataWarning):  # train.py predict names them alike
        run_cli(["predict", *common, "--data.init_args.modalities", "[T2w]", "--data.init_args.test_subjects",
                 "[sub-04]", "--ckpt_path", str(checkpoint), "--prediction_writer.output_dir",
                 str(tmp_path / "by_train_py")], save_config=False)
    assert [p.relative_to(tmp_path / "by_train_py").as_posix() for p in (tmp_path / "by_train_py").rglob("*.nii.gz")
            ] == ["sub-04/ses-1/anat/sub-04_ses-1_space-orig_desc-T2w_dseg.nii.gz"]


def test_every_derivative_image_says_which_input_files_it_came_from(tmp_path: Path) -> None:
    """Each ``_dseg``/``_probseg`` gets a JSON sidecar: ``Sources`` as BIDS URIs that
    ``dataset_description.json``'s ``DatasetLinks`` resolve to the input images (a relative link
    for ``<dataset>/derivatives/<name>``), ``Manual: false``. A sidecar that is not ours is never
    replaced (refused before any work), ours only with ``overwrite``; a second input dataset
    written into a kept description is said, with a key of its own."""
    from core.export import PredictionFolder, Segmentation
    from core.labels import LabelSpace
    from core.volumes import Subject

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "raw", "BIDSVersion": "1.9.0"}))
    images = tuple(write_nifti(np.ones((4, 4, 4), np.float32), raw / "sub-01" / "anat" / f"sub-01_{s}.nii.gz")
                   for s in ("T1w", "FLAIR"))
    labels = LabelSpace.from_values({0: "background", 1: "lesion"})
    segmentation = Segmentation("sub-01", np.eye(4, dtype=np.int16)[None].repeat(4, 0), np.eye(4), labels,
                                probabilities=np.full((2, 4, 4, 4), 0.5, np.float32))
    subject = Subject("sub-01", images)
    output = raw / "derivatives" / "seg"

    def folder(**kwargs: object) -> PredictionFolder:
        return PredictionFolder.for_subjects(output, [subject], maps=2, names=BIDS_NAMES, **kwargs)

    written = folder(probabilities=True)
    written.write(segmentation)
    written.close()
    links = json.loads((output / "dataset_description.json").read_text())["DatasetLinks"]
    assert links == {"raw": "../.."}
    for suffix in ("dseg", "probseg"):
        sidecar = json.loads((output / "sub-01" / "anat" / f"sub-01_space-orig_{suffix}.json").read_text())
        assert sidecar["Manual"] is False
        assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
                                      "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"]
        resolved = [output / links["raw"] / uri.removeprefix("bids:raw:") for uri in sidecar["Sources"]]
        assert [p.resolve() for p in resolved] == [p.resolve() for p in images]

    ours = output / "sub-01" / "anat" / "sub-01_space-orig_dseg.json"
    (output / "sub-01" / "anat" / "sub-01_space-orig_dseg.nii.gz").unlink()
    with pytest.raises(DataError, match=rf"{ours}: exists \(an earlier prediction\); pass --overwrite"):
        folder()
    folder(overwrite=True).write(segmentation)  # ours: replaced with overwrite
    ours.write_text(json.dumps({"Description": "reviewed by hand", "Manual": True}))
    with pytest.raises(DataError, match=rf"{ours}: exists and was not written by a prediction of this codebase"):
        folder(overwrite=True)
    assert json.loads(ours.read_text())["Manual"] is True

    other = tmp_path / "other"  # a second dataset into the same derivative, outside it
    other.mkdir()
    (other / "dataset_description.json").write_text(json.dumps({"Name": "other", "BIDSVersion": "1.9.0"}))
    image = write_nifti(np.ones((4, 4, 4), np.float32), other / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    with pytest.warns(DataWarning, match=r"dataset_description.json: kept as it is, but it has no DatasetLinks "
                                         rf"entry for {other}; the new sidecars name its files bids:raw2:"):
        second = PredictionFolder.for_subjects(output, [Subject("sub-02", (image,))], maps=2, names=BIDS_NAMES)
    assert second.links == {"raw2": other.as_uri()}
    second.write(Segmentation("sub-02", np.zeros((4, 4, 4), np.int16), np.eye(4), labels))
    sidecar = json.loads((output / "sub-02" / "anat" / "sub-02_space-orig_dseg.json").read_text())
    assert sidecar["Sources"] == ["bids:raw2:sub-02/anat/sub-02_T1w.nii.gz"]
    # The first dataset again: the kept description's own key, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BIDS_NAMES.links(images, output) == {"raw": "../.."}
    # Inputs from another derivative of the same dataset (preprocessed images): "input", a
    # relative link that moves with the dataset; the raw images beside them keep "raw".
    prep = raw / "derivatives" / "prep"
    prep.mkdir()
    (prep / "dataset_description.json").write_text(json.dumps({"Name": "prep", "DatasetType": "derivative"}))
    preprocessed = prep / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz"
    new = raw / "derivatives" / "seg2"
    links = BIDS_NAMES.links([preprocessed, images[1]], new)
    assert links == {"input": "../prep", "raw": "../.."}
    assert json.loads(BIDS_NAMES.describe_image([preprocessed, images[1]], new, links))["Sources"] == [
        "bids:input:sub-01/anat/sub-01_desc-preproc_T1w.nii.gz", "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"]


def test_a_model_of_another_layout_segments_a_bids_dataset_and_is_scored_by_structure_name(
        trained_checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    """The tiny iSeg model given a BIDS dataset of the same scans (T1w, T2w) with manual labels
    numbered 1-3: said to need --bids-modalities; with them, a BIDS derivative whose
    segmentations equal predict.py's on the files, in the model's values (CSF 10, GM 150, WM 250)
    and its dseg.tsv; evaluate.py --dataset dseg matches the two derivatives' structures by name
    and scores what --dataset iseg scores of the same files."""
    import evaluate
    import predict

    bids = tmp_path / "bids"
    manual = bids / "derivatives" / "manual"
    for folder, name in ((bids, "raw"), (manual, "manual")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset_description.json").write_text(json.dumps(
            {"Name": name, "BIDSVersion": "1.9.0", **({"DatasetType": "derivative"} if folder == manual else {})}))
    (manual / "dseg.tsv").write_text("index\tname\n1\tcsf\n2\tGM\n3\tWM\n")  # letter case is not a name
    for n in (3, 4):
        for modality in ("T1", "T2"):
            image = nib.load(tiny_demo_dir / f"subject-{n}-{modality}.hdr")
            write_nifti(np.asarray(image.dataobj).reshape(image.shape[:3]),
                        bids / f"sub-0{n}" / "anat" / f"sub-0{n}_{modality}w.nii.gz", image.affine)
        label = nib.load(tiny_demo_dir / f"subject-{n}-label.hdr")
        values = np.asarray(label.dataobj).reshape(label.shape[:3])
        write_nifti(np.select([values == 10, values == 150, values == 250], [1, 2, 3], 0).astype(np.uint8),
                    manual / f"sub-0{n}" / "anat" / f"sub-0{n}_dseg.nii.gz", label.affine)
    with pytest.raises(DataError, match=r"no iSeg subjects found .*; it is a BIDS dataset: --bids-modalities names the "
                                        r"BIDS suffixes that stand for the model's T1, T2 \(e\.g\. --bids-modalities "
                                        r"T1w T2w\)"):
        predict.predict(trained_checkpoint, [bids], tmp_path / "refused")
    output = bids / "derivatives" / "brainseg"
    written = predict.predict(trained_checkpoint, [bids], output, bids_modalities=["T1w", "T2w"])
    assert [p.relative_to(output).as_posix() for p in written] == [
        f"sub-0{n}/anat/sub-0{n}_space-orig_dseg.nii.gz" for n in (3, 4)]
    assert read_dseg_tsv(output / "dseg.tsv") == {0: "background", 10: "CSF", 150: "GM", 250: "WM"}
    sidecar = json.loads((output / "sub-04" / "anat" / "sub-04_space-orig_dseg.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-04/anat/sub-04_T1w.nii.gz", "bids:raw:sub-04/anat/sub-04_T2w.nii.gz"]
    iseg = tmp_path / "iseg"
    for n in (3, 4):
        (direct,) = predict.predict(trained_checkpoint, [tiny_demo_dir / f"subject-{n}-{m}.hdr" for m in ("T1", "T2")],
                                    iseg)
        np.testing.assert_array_equal(np.asarray(nib.load(written[n - 3]).dataobj),
                                      np.asarray(nib.load(direct).dataobj))
    by_name = evaluate.evaluate_folders(output, manual, "dseg")
    truth = tmp_path / "truth"
    truth.mkdir()
    for n in (3, 4):  # the iSeg labels of the same subjects as NIfTI, scored by their values
        label = nib.load(tiny_demo_dir / f"subject-{n}-label.hdr")
        nib.save(nib.Nifti1Image(np.asarray(label.dataobj).reshape(label.shape[:3]), label.affine),
                 truth / f"subject-{n}.nii.gz")
    by_value = evaluate.evaluate_folders(iseg, truth, "iseg")
    assert len(by_name) == len(by_value) == 6
    for named, valued in zip(by_name, by_value, strict=True):
        assert named["structure"].casefold() == valued["structure"].casefold()
        for metric in ("dice", "avd_percent", "sensitivity"):
            assert named[metric] == pytest.approx(valued[metric], abs=1e-12, nan_ok=True), metric
    for n in (3, 4):  # the truth in the model's values, as a perfect model writes it: Dice 1 by name, every structure
        label = nib.load(tiny_demo_dir / f"subject-{n}-label.hdr")
        nib.save(nib.Nifti1Image(np.asarray(label.dataobj).reshape(label.shape[:3]), label.affine), written[n - 3])
    assert [row["dice"] for row in evaluate.evaluate_folders(output, manual, "dseg")] == [1.0] * 6
    (manual / "dseg.tsv").write_text("index\tname\n1\tCSF\n2\tGM\n3\tlesion\n")
    with pytest.raises(evaluate.EvaluationError, match=r"brainseg/dseg\.tsv names \['WM'\] that .*manual/dseg\.tsv "
                                                       r"does not; .*manual/dseg\.tsv names \['lesion'\] that "
                                                       r".*brainseg/dseg\.tsv does not: a prediction's structures "
                                                       r"are matched to the ground truth's by name"):
        evaluate.evaluate_folders(output, manual, "dseg")
    with pytest.raises(DataError, match=r"--bids-modalities T1w: .* takes 2 modalities \(T1, T2\), one BIDS suffix"):
        predict.predict(trained_checkpoint, [bids], tmp_path / "one", bids_modalities=["T1w"])
    with pytest.raises(DataError, match=r"--bids-modalities: modality 'T1w.nii': expected a BIDS suffix"):
        predict.predict(trained_checkpoint, [bids], tmp_path / "bad", bids_modalities=["T1w.nii", "T2w"])
    with pytest.raises(DataError, match=r"reading BIDS \(--bids-modalities\) needs a dataset folder"):
        predict.predict(trained_checkpoint, list(written), tmp_path / "files", bids_modalities=["T1w", "T2w"])


def with_skull(bids: Path, sessions: list[str], masks: Path, subject_level: tuple[str, ...] = ()) -> None:
    """Every image of ``sessions`` given a non-zero outside (a scan that is not skull-stripped: a
    shell of 500 and noise of 40) and its brain (where the label is) written to ``masks`` as
    ``*_desc-brain_mask.nii.gz``, session-level, or participant-level for ``subject_level``."""
    (masks / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (masks / "dataset_description.json").write_text(json.dumps(
        {"Name": "synthstrip", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "SynthStrip"}]}))
    rng = np.random.default_rng(0)
    for name in sessions:
        subject, session = unit_parts(name)
        anat = f"sub-{subject}/ses-{session}/anat"
        label = bids / "derivatives" / "manual" / anat / f"{name}_desc-tissue_dseg.nii.gz"
        brain = np.asarray(nib.load(label).dataobj) > 0
        for image in (bids / anat).glob("*_T?w.nii.gz"):
            data = np.asarray(nib.load(image).dataobj).astype(np.int16)
            data[~brain] = 500 + rng.integers(0, 40, int((~brain).sum()))
            write_nifti(data, image)
        folder, stem = ((f"sub-{subject}/anat", f"sub-{subject}") if subject in subject_level
                        else (f"sub-{subject}/ses-{session}/anat", name))
        write_nifti(brain.astype(np.uint8), masks / folder / f"{stem}_desc-brain_mask.nii.gz")


def preprocessed(datamodule: BIDSDataModule, name: str) -> Volume:
    return load_subject(datamodule.subjects()[name], datamodule.label_space, datamodule.preprocessing)


def test_brain_masks_from_a_derivative_blank_the_outside_of_scans_not_skull_stripped(tmp_path: Path) -> None:
    """masks_dir: each session's ``*_desc-brain_mask`` (the native one among fMRIPrep-style
    ``space-MNI`` copies) sets the image to 0 outside the brain before normalisation: the volumes
    equal those of the skull-stripped scans. A participant-level mask serves its one session,
    never several; a session without a mask is skipped with the reason (an error with
    require_all); a pipeline folder that is not there is one line."""
    stripped = write_bids(tmp_path / "stripped")
    bids = write_bids(tmp_path / "raw")
    masks = bids / "derivatives" / "synthstrip"
    with_skull(bids, ["sub-01_ses-1", "sub-01_ses-2", "sub-03_ses-1", "sub-04_ses-1", "sub-05_ses-1"], masks,
               subject_level=("01", "04"))
    (masks / "sub-05").rename(tmp_path / "sub-05-mask")  # sub-05: no mask
    write_nifti(np.ones((5, 5, 5), np.uint8),
                masks / "sub-03/ses-1/anat/sub-03_ses-1_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    for folder in (masks, bids / "derivatives" / "manual"):  # fMRIPrep's BOLD-space ones, named alike: not anatomy
        for suffix in ("desc-brain_mask", "desc-tissue_dseg"):
            write_nifti(np.ones((5, 5, 5), np.uint8),
                        folder / f"sub-03/ses-1/func/sub-03_ses-1_task-rest_{suffix}.nii.gz")
    with pytest.warns(DataWarning) as caught:
        subjects = dm(bids, masks_dir="derivatives/synthstrip").subjects()
    assert list(subjects) == ["sub-03_ses-1", "sub-04_ses-1"]
    assert subjects["sub-03_ses-1"].brain_mask == masks / "sub-03/ses-1/anat/sub-03_ses-1_desc-brain_mask.nii.gz"
    assert subjects["sub-04_ses-1"].brain_mask == masks / "sub-04/anat/sub-04_desc-brain_mask.nii.gz"
    messages = [str(w.message) for w in caught]
    pattern = f"no brain mask (sub-*_desc-brain_mask.nii.gz) in {masks}"
    assert f"{bids}: skipping sub-05_ses-1: {pattern}" in messages
    for session in ("sub-01_ses-1", "sub-01_ses-2"):
        assert (f"{bids}: skipping {session}: {pattern}: only sub-01_desc-brain_mask.nii.gz, made for all of sub-01's "
                "sessions, which lie apart (the head moves between them); give each session a mask of its own"
                ) in messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        for name in ("sub-03_ses-1", "sub-04_ses-1"):
            masked = preprocessed(dm(bids, masks_dir=str(masks)), name)  # an absolute masks_dir: the same
            unmasked, plain = preprocessed(dm(bids), name), preprocessed(dm(stripped), name)
            np.testing.assert_array_equal(masked.image, plain.image)
            np.testing.assert_array_equal(masked.label, plain.label)
            assert (unmasked.image != 0).mean() == 1.0 and (masked.image == 0).mean() > 0.3
        with pytest.raises(DataError, match=r"sub-03_ses-1_space-MNI152NLin2009cAsym_desc-brain_mask\.nii\.gz: shape "
                                            r"\(5, 5, 5\) differs from sub-03_ses-1_run-2_T1w\.nii\.gz"):
            preprocessed(dm(bids, masks_dir="derivatives/synthstrip",
                            mask_entities={"desc": "brain", "space": "MNI152NLin2009cAsym"}), "sub-03_ses-1")
    with pytest.warns(DataWarning, match="2 runs of T1w"), pytest.raises(
            DataError, match=r"sub-01_ses-1: no brain mask \(sub-\*_desc-brain_mask\.nii\.gz\) in .*synthstrip: only "
                             r".* \(require_all is set; 4 sessions lack a file\)"):
        dm(bids, masks_dir="derivatives/synthstrip", require_all=True).subjects()
    from datamodules.folders import layout_arguments, without_missing_masks  # a checkpoint's masks at prediction

    record = {"class_path": "datamodules.bids.BIDSDataModule",
              "init_args": {"data_dir": str(bids), "masks_dir": "derivatives/synthstrip"}}
    assert without_missing_masks(record, bids) == record  # the same pipeline in the folder: its masks
    with pytest.warns(DataWarning, match=r"stripped/bids/derivatives/synthstrip: not found; the model was trained on "
                                         r"scans masked .* \(masks_dir derivatives/synthstrip\), and these are "
                                         r"segmented as they are \(--brain-mask names their masks\)"):
        assert without_missing_masks(record, stripped)["init_args"] == {"data_dir": str(bids)}
    absolute = {**record, "init_args": {"data_dir": str(bids), "masks_dir": str(masks)}}
    assert without_missing_masks(absolute, bids) == absolute  # the training dataset's own pipeline
    with pytest.warns(DataWarning, match=r"stripped/bids: not .*/raw/bids/derivatives/synthstrip; the model was "
                                         r"trained on scans masked"):  # never another dataset's
        assert "masks_dir" not in without_missing_masks(absolute, stripped)["init_args"]

    saved = {"masks_dir": "derivatives/synthstrip", "mask_entities": {"desc": "brain"}, "batch_size": 2}
    assert layout_arguments(BIDSDataModule, saved) == {"masks_dir": "derivatives/synthstrip",
                                                       "mask_entities": {"desc": "brain"}}
    with pytest.raises(DataError, match=rf"{bids}/derivatives/bet: folder not found \(masks_dir: the "
                                        r"derivatives pipeline with each session's brain mask, "
                                        r"sub-\*_desc-brain_mask\.nii\.gz\)"):
        dm(bids, masks_dir="derivatives/bet").subjects()


def test_predict_py_masks_each_session_of_a_bids_dataset_from_a_derivative(
        trained_checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny iSeg model (trained on skull-stripped scans) given a BIDS dataset of the same
    scans with a skull around the brain: without masks each scan is warned about and segmented
    otherwise; with ``--brain-mask`` naming the derivatives pipeline of masks, the segmentations
    equal those of the skull-stripped files, and each sidecar names its mask among its sources.
    A mask file for a folder, or a mask pipeline for a layout other than BIDS, is one line."""
    import predict

    bids, masks = tmp_path / "bids", tmp_path / "bids" / "derivatives" / "synthstrip"
    for folder, extra in ((bids, {}), (masks, {"DatasetType": "derivative"})):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset_description.json").write_text(json.dumps({"Name": folder.name, "BIDSVersion": "1.9.0",
                                                                     **extra}))
    rng = np.random.default_rng(1)
    for n in (3, 4):
        images = {m: nib.load(tiny_demo_dir / f"subject-{n}-{m}.hdr") for m in ("T1", "T2")}
        arrays = {m: np.asarray(i.dataobj).reshape(i.shape[:3]) for m, i in images.items()}
        brain = (arrays["T1"] != 0) | (arrays["T2"] != 0)
        for modality, data in arrays.items():
            skull = data.copy()
            skull[~brain] = 300 + rng.integers(0, 50, int((~brain).sum()))
            write_nifti(skull, bids / f"sub-0{n}" / "anat" / f"sub-0{n}_{modality}w.nii.gz", images["T1"].affine)
        write_nifti(brain.astype(np.uint8), masks / f"sub-0{n}" / "anat" / f"sub-0{n}_desc-brain_mask.nii.gz",
                    images["T1"].affine)
    with pytest.warns(DataWarning, match=r"sub-03: .*sub-03_T1w\.nii\.gz \(given as T1\) has 0\.0% of its voxels at 0"):
        unmasked = predict.predict(trained_checkpoint, [bids], tmp_path / "unmasked", bids_modalities=["T1w", "T2w"],
                                   save_probabilities=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a masked scan has the background the model was trained with
        written = predict.predict(trained_checkpoint, [bids], bids / "derivatives" / "brainseg",
                                  bids_modalities=["T1w", "T2w"], brain_mask=masks, save_probabilities=True)
    assert [p.relative_to(bids).as_posix() for p in written] == [
        f"derivatives/brainseg/sub-0{n}/anat/sub-0{n}_space-orig_dseg.nii.gz" for n in (3, 4)]
    for n, masked, plain in zip((3, 4), written, unmasked, strict=True):
        (direct,) = predict.predict(trained_checkpoint, [tiny_demo_dir / f"subject-{n}-{m}.hdr" for m in ("T1", "T2")],
                                    tmp_path / "stripped", save_probabilities=True)
        np.testing.assert_array_equal(np.asarray(nib.load(masked).dataobj), np.asarray(nib.load(direct).dataobj))
        # the probabilities (the tiny model's segmentation is all background either way)
        masked, plain = (nib.load(str(p).replace("_dseg", "_probseg")).get_fdata() for p in (masked, plain))
        stripped = nib.load(direct.with_name(f"subject-{n}_probabilities.nii.gz")).get_fdata()
        np.testing.assert_array_equal(masked, stripped)
        assert np.abs(plain - stripped).max() > 1e-3  # a barely trained model: near-uniform probabilities
    output = bids / "derivatives" / "brainseg"  # masking changes voxels: a run continued without it redoes all
    (logged,) = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert logged["brain_masks"] is True and stamp_of(written[0])["brain_masks"] is True
    assert "brain_masks" not in stamp_of(unmasked[0])
    assert predict.predict(trained_checkpoint, [bids], output, bids_modalities=["T1w", "T2w"], brain_mask=masks,
                           save_probabilities=True, continuing=True) == []
    with pytest.warns(DataWarning, match="has 0.0% of its voxels at 0"):
        assert predict.predict(trained_checkpoint, [bids], output, bids_modalities=["T1w", "T2w"],
                               save_probabilities=True, continuing=True) == written
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert predict.predict(trained_checkpoint, [bids], output, bids_modalities=["T1w", "T2w"], brain_mask=masks,
                               save_probabilities=True, continuing=True) == written
    sidecar = json.loads(written[1].with_name("sub-04_space-orig_dseg.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-04/anat/sub-04_T1w.nii.gz", "bids:raw:sub-04/anat/sub-04_T2w.nii.gz",
                                  "bids:input:sub-04/anat/sub-04_desc-brain_mask.nii.gz"]
    description = json.loads((bids / "derivatives" / "brainseg" / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": "../..", "input": "../synthstrip"}
    with pytest.raises(DataError, match=r"sub-03_desc-brain_mask\.nii\.gz: a file; with a dataset folder, --brain-mask "
                                        r"names the derivatives pipeline folder"):
        predict.predict(trained_checkpoint, [bids], tmp_path / "file", bids_modalities=["T1w", "T2w"],
                        brain_mask=masks / "sub-03" / "anat" / "sub-03_desc-brain_mask.nii.gz")
    with pytest.raises(DataError, match=r"synthstrip: --brain-mask with a dataset folder names the derivatives "
                                        r"pipeline of a BIDS dataset's brain masks .*, but .* reads "
                                        r"ISeg2017DataModule folders"):
        predict.predict(trained_checkpoint, [tiny_demo_dir], tmp_path / "iseg", brain_mask=masks)
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--checkpoint", str(trained_checkpoint), "--input", str(bids), "--output", str(tmp_path / "x"),
                      "--bids-modalities", "T1w", "T2w", "--brain-mask", str(tmp_path / "bet")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"predict.py: error: {tmp_path}/bet: folder not found (masks_dir: the derivatives pipeline with each "
        "session's brain mask, sub-*_desc-brain_mask.nii.gz)")
    assert not (tmp_path / "x").exists()
