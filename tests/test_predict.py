"""predict.py: a checkpoint and new scans in, segmentations in the scans' own space out."""

import csv
import dataclasses
import gzip
import json
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.io import DataWarning
from datamodules import DataError
from predict import main, predict
from train import run_cli

from conftest import tiny_run_args


@pytest.fixture
def checkpoint(trained_checkpoint: Path) -> Path:
    """The shared trained model (``conftest.trained_run``): one epoch on the tiny demo set."""
    return trained_checkpoint


def run_with(checkpoint: Path, data_dir: Path, subcommand: str, extra: list[str]) -> None:
    """``train.py <subcommand>`` with the checkpoint, on the tiny demo set (subject-4 held out)."""
    run_cli(tiny_run_args(subcommand, data_dir, None, "--ckpt_path", str(checkpoint), *extra), save_config=False)


def test_an_interrupted_folder_prediction_continues_where_it_stopped(checkpoint: Path, tiny_demo_dir: Path,
                                                                    tmp_path: Path) -> None:
    """``--continue-prediction`` (nnU-Net's ``--continue_prediction``): the subjects an
    interrupted run wrote whole are kept, byte for byte, and counted in ``volumes.csv``; the
    others are segmented, a leftover of ours replaced (a segmentation whose probabilities were
    never written); a file that is not ours is still refused. Without it, the earlier outputs
    are refused before any work."""
    whole = tmp_path / "whole"
    predict(checkpoint, [tiny_demo_dir], whole, subjects=["subject-3", "subject-4"], save_probabilities=True)
    out = tmp_path / "out"
    (kept,) = predict(checkpoint, [tiny_demo_dir], out, subjects=["subject-3"], save_probabilities=True)
    (out / "predictions.jsonl").unlink()  # as a run killed before its end leaves the folder: no log, no table
    (out / "volumes.csv").unlink()
    before = kept.read_bytes()
    (leftover,) = predict(checkpoint, [tiny_demo_dir], tmp_path / "other", subjects=["subject-4"])
    leftover.rename(out / "subject-4_seg.nii.gz")  # segmentation written, probabilities not yet
    with pytest.raises(DataError, match=r"subject-3_seg\.nii\.gz: exists \(an earlier prediction\); pass --overwrite "
                                        r"to replace it \(or, after an interrupted run, --continue-prediction"):
        predict(checkpoint, [tiny_demo_dir], out, subjects=["subject-3", "subject-4"], save_probabilities=True)
    written = predict(checkpoint, [tiny_demo_dir], out, subjects=["subject-3", "subject-4"], save_probabilities=True,
                      continuing=True)
    assert written == [out / "subject-4_seg.nii.gz"] and kept.read_bytes() == before
    assert (out / "subject-4_probabilities.nii.gz").is_file()
    assert (out / "volumes.csv").read_text() == (whole / "volumes.csv").read_text()
    (run,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert run["subjects"] == ["subject-4"] and run["kept"] == ["subject-3"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "subject-4_seg.nii.gz").write_bytes(whole.joinpath("subject-4_seg.nii.gz").read_bytes()[:100])
    with pytest.raises(DataError, match=r"subject-4_seg\.nii\.gz: exists and was not written by a prediction of this "
                                        r"codebase"):
        predict(checkpoint, [tiny_demo_dir], foreign, subjects=["subject-4"], continuing=True)
    # train.py predict alike: the DataModule reads only the subjects still to segment
    cli = tmp_path / "cli"
    (first,) = predict(checkpoint, [tiny_demo_dir], cli, subjects=["subject-3"])
    before = first.read_bytes()
    writer = ["--data.init_args.predict_dir", str(tiny_demo_dir), "--prediction_writer.output_dir", str(cli)]
    with pytest.raises(DataError, match=r"subject-3_seg\.nii\.gz: exists \(an earlier prediction\)"):
        run_with(checkpoint, tiny_demo_dir, "predict", writer)
    run_with(checkpoint, tiny_demo_dir, "predict", [*writer, "--prediction_writer.continue_prediction", "true"])
    runs = [json.loads(line) for line in (cli / "predictions.jsonl").read_text().splitlines()]
    assert runs[-1]["subjects"] == ["subject-1", "subject-2", "subject-4"] and runs[-1]["kept"] == ["subject-3"]
    assert first.read_bytes() == before and len(list(cli.glob("subject-*_seg.nii.gz"))) == 4


def test_continuing_keeps_only_what_this_model_segmented_with_these_settings(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each image carries what made it (a NIfTI header extension: the checkpoint's SHA-256 and the
    settings that change voxels). A continued run keeps a subject's files only when its own model
    (a copy of the checkpoint elsewhere is the same model) and settings made them; files of other
    weights or other windows are segmented again, and said; an image from before stamps is kept."""
    import hashlib

    from core.export import output_identity, stamp_of

    out = tmp_path / "out"
    (first,) = predict(checkpoint, [tiny_demo_dir], out, subjects=["subject-3"])
    (run,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert run["checkpoint_sha256"] == digest and run["checkpoint"] == str(checkpoint.resolve())
    assert stamp_of(first) == output_identity(run) and stamp_of(first)["checkpoint_sha256"] == digest
    assert "checkpoint" not in stamp_of(first) and "sw_batch_size" not in stamp_of(first)  # the bytes name the model
    copied = tmp_path / "moved" / "model.ckpt"
    copied.parent.mkdir()
    copied.write_bytes(checkpoint.read_bytes())
    both = ["subject-3", "subject-4"]
    capsys.readouterr()
    assert predict(copied, [tiny_demo_dir], out, subjects=both, continuing=True) == [out / "subject-4_seg.nii.gz"]
    assert "1 of 2 subjects were segmented whole by an earlier run and are kept\n" in capsys.readouterr().out
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k in state["state_dict"] if k.endswith("weight"))
    state["state_dict"][name] = state["state_dict"][name] + 0.5
    retrained = tmp_path / "retrained.ckpt"
    torch.save(state, retrained)
    assert predict(retrained, [tiny_demo_dir], out, subjects=both, continuing=True) == [
        out / "subject-3_seg.nii.gz", out / "subject-4_seg.nii.gz"]
    assert ("0 of 2 subjects were segmented whole by an earlier run and are kept; 2 segmented with another model or "
            "other settings are segmented again: subject-3, subject-4") in capsys.readouterr().out
    assert stamp_of(out / "subject-3_seg.nii.gz")["checkpoint_sha256"] == hashlib.sha256(
        retrained.read_bytes()).hexdigest()
    assert stamp_of(out / "subject-4_seg.nii.gz")["window_scale"] == 2  # the demo recipe's
    assert predict(retrained, [tiny_demo_dir], out, subjects=both, continuing=True, window_scale=1) == [
        out / "subject-3_seg.nii.gz", out / "subject-4_seg.nii.gz"]  # other windows: other voxels, maybe
    assert stamp_of(out / "subject-4_seg.nii.gz")["window_scale"] == 1
    assert predict(retrained, [tiny_demo_dir], out, subjects=both, continuing=True, window_scale=1,
                   sw_batch_size=1) == []  # the batch of windows changes no voxel
    legacy = nib.load(str(out / "subject-4_seg.nii.gz"))
    legacy.header.extensions.clear()
    nib.save(legacy, str(out / "subject-4_seg.nii.gz"))  # as written before images were stamped
    assert stamp_of(out / "subject-4_seg.nii.gz") is None
    assert predict(checkpoint, [tiny_demo_dir], out, subjects=both, continuing=True) == [out / "subject-3_seg.nii.gz"]
    # train.py predict alike: the DataModule reads only the subjects this checkpoint did not segment
    writer = ["--data.init_args.predict_dir", str(tiny_demo_dir), "--prediction_writer.output_dir", str(out),
              "--prediction_writer.continue_prediction", "true"]
    run_with(retrained, tiny_demo_dir, "predict", [*writer, "--model.window_scale", "1"])
    logged = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()][-1]
    assert logged["subjects"] == ["subject-1", "subject-2", "subject-3"] and logged["kept"] == ["subject-4"]
    assert stamp_of(out / "subject-3_seg.nii.gz") == output_identity(logged)
    assert logged["checkpoint_sha256"] == hashlib.sha256(retrained.read_bytes()).hexdigest()
    assert predict(retrained, [tiny_demo_dir], out, continuing=True, window_scale=1) == []  # one identity for both


def test_folder_input_writes_every_subject_in_its_own_space(checkpoint: Path, tiny_demo_dir: Path,
                                                          tmp_path: Path) -> None:
    written = predict(checkpoint, [tiny_demo_dir], tmp_path / "out")
    assert [p.name for p in written] == [f"subject-{n}_seg.nii.gz" for n in (1, 2, 3, 4)]
    for n, path in enumerate(written, start=1):
        source = nib.load(str(tiny_demo_dir / f"subject-{n}-T1.hdr"))
        segmentation = nib.load(str(path))
        assert segmentation.shape == source.shape[:3]
        np.testing.assert_allclose(segmentation.affine, source.affine)
        assert set(np.unique(np.asarray(segmentation.dataobj)).tolist()) <= {0, 10, 150, 250}
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_a_folders_subjects_can_be_chosen_by_id_or_split_between_jobs(checkpoint: Path, tiny_demo_dir: Path,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--subjects`` segments only those; ``--shard K/N`` every N-th subject from the K-th, so
    that the shards of a SLURM array together write each subject once into one folder (and one
    ``volumes.csv``). A name the folder lacks, a shard that is not K/N, and a choice made of one
    subject's files are one line each (exit 2), before any segmentation."""
    common = ["--checkpoint", str(checkpoint), "--input", str(tiny_demo_dir)]
    main([*common, "--output", str(tmp_path / "chosen"), "--subjects", "subject-3", "subject-1"])
    assert sorted(p.name for p in (tmp_path / "chosen").glob("*.nii.gz")) == [
        "subject-1_seg.nii.gz", "subject-3_seg.nii.gz"]
    for shard in ("0/3", "1/3", "2/3"):
        main([*common, "--output", str(tmp_path / "shards"), "--shard", shard])
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.nii.gz")) == [
        f"subject-{n}_seg.nii.gz" for n in (1, 2, 3, 4)]
    with open(tmp_path / "shards" / "volumes.csv", newline="") as handle:
        assert sorted(row["subject"] for row in csv.DictReader(handle)) == [f"subject-{n}" for n in (1, 2, 3, 4)]
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "shards" / "subject-3_seg.nii.gz").dataobj),
                                  np.asarray(nib.load(tmp_path / "chosen" / "subject-3_seg.nii.gz").dataobj))
    # Each run (shard) appends a line to the folder's log: which subjects, by what, with which code.
    runs = [json.loads(line) for line in (tmp_path / "shards" / "predictions.jsonl").read_text().splitlines()]
    assert [run["subjects"] for run in runs] == [["subject-1", "subject-4"], ["subject-2"], ["subject-3"]]
    assert {run["checkpoint"] for run in runs} == {str(checkpoint)} and runs[0]["flips"] is False
    assert runs[0]["window"] == [16, 16, 16] and runs[0]["sw_overlap"] == 0.5 and runs[0]["precision"] == "32"
    assert len(runs[0]["code"]["commit"]) == 40 and runs[0]["time"].endswith("+00:00")
    from evaluate import provenance_text  # the shards are one checkpoint with one set of settings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        said = provenance_text(tmp_path / "shards", [f"subject-{n}" for n in (1, 2, 3, 4)])
    assert said.startswith(f"\nPredictions of 4 subjects by {checkpoint} (window [16, 16, 16], ")
    assert said.count("\n") == 2  # one line
    foreign = tmp_path / "foreign"  # a file of that name that is not our log is never added to
    foreign.mkdir()
    (foreign / "predictions.jsonl").write_text('{"their": "notes"}\n')
    with pytest.raises(SystemExit) as exit_code:
        main([*common, "--output", str(foreign), "--subjects", "subject-1"])
    assert exit_code.value.code == 2 and "is not this codebase's log of prediction runs" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["predictions.jsonl"]
    capsys.readouterr()
    main([*common, "--output", str(tmp_path / "empty"), "--shard", "5/6"])  # more shards than subjects
    assert "shard 5/6 has no subjects (fewer than 6 to share out); nothing written" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()
    refused = [(["--subjects", "subject-2", "subject-9"], f"{tiny_demo_dir}: no subject subject-9 there (its "
                 "subjects: subject-1, subject-2, subject-3, subject-4)"),
               (["--shard", "3/3"], "argument --shard: '3/3': K must be 0 to N-1"),
               (["--shard", "half"], "argument --shard: 'half' is not K/N (e.g. 0/4)")]
    for extra, said in refused:
        with pytest.raises(SystemExit) as exit_code:
            main([*common, "--output", str(tmp_path / "refused"), *extra])
        assert exit_code.value.code == 2 and said in capsys.readouterr().err, extra
    files = [str(tiny_demo_dir / f"subject-1-{m}.hdr") for m in ("T1", "T2")]
    with pytest.raises(SystemExit) as exit_code:
        main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(tmp_path / "refused"),
              "--shard", "0/2"])
    assert exit_code.value.code == 2 and "needs a dataset folder as --input" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_the_log_names_the_checkpoint_file_itself_however_it_was_given(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs/x/latest/checkpoints/best.ckpt`` names another run once the next fit starts, and a
    relative path means nothing elsewhere: the log records the file, absolute with links
    resolved, so one checkpoint given two ways is one run to evaluate.py."""
    from evaluate import provenance_text

    (tmp_path / "latest").symlink_to(checkpoint.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    for given, subject in ((f"latest/{checkpoint.name}", "subject-1"), (str(checkpoint), "subject-2")):
        main(["--checkpoint", given, "--input", str(tiny_demo_dir), "--output", str(out), "--subjects", subject])
    runs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [run["checkpoint"] for run in runs] == [str(checkpoint.resolve())] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one checkpoint, one set of settings: no warning of pooled runs
        said = provenance_text(out, ["subject-1", "subject-2"])
    assert said.startswith(f"\nPredictions of 2 subjects by {checkpoint.resolve()} (window [16, 16, 16], ")


def test_a_subject_with_bad_input_does_not_stop_the_others_or_lose_the_folders_tables(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder where subject-2's T2 is of another shape and subject-3 has NaN voxels: predict.py
    segments subjects 1 and 4, writes their volumes.csv rows and the run's log line, then says
    both problems in one line (exit 2). train.py predict, which stops at the first, still leaves
    the tables of what it wrote."""
    import shutil

    from conftest import write_analyze

    folder = tmp_path / "scans"
    shutil.copytree(tiny_demo_dir, folder)
    t1 = np.asarray(nib.load(str(folder / "subject-3-T1.hdr")).dataobj).astype(np.float32)
    write_analyze(np.zeros((5, 5, 5), np.int16), folder / "subject-2-T2.hdr")
    t1[0, 0, 0] = np.nan
    nib.save(nib.AnalyzeImage(t1, nib.load(str(folder / "subject-3-T1.hdr")).affine), str(folder / "subject-3-T1.hdr"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(out)])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and said.count("\n") == 1, said
    assert said.startswith("predict.py: error: 2 of 4 subjects cannot be used: ") and "subject-2-T2.hdr: shape" in said
    assert "subject-3-T1.hdr: 1 voxels are NaN or infinite" in said
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["subject-1_seg.nii.gz", "subject-4_seg.nii.gz"]
    with open(out / "volumes.csv", newline="") as handle:
        assert [row["subject"] for row in csv.DictReader(handle)] == ["subject-1", "subject-4"]
    (run,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert run["subjects"] == ["subject-1", "subject-4"]
    cli = tmp_path / "cli"
    with pytest.raises(DataError, match=r"subject-2-T2\.hdr: shape"):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--data.init_args.predict_dir", str(folder),
                                                         "--prediction_writer.output_dir", str(cli)])
    with open(cli / "volumes.csv", newline="") as handle:
        assert [row["subject"] for row in csv.DictReader(handle)] == ["subject-1"]
    assert json.loads((cli / "predictions.jsonl").read_text())["subjects"] == ["subject-1"]


def test_scans_not_on_one_grid_are_resampled_onto_the_first_when_asked(checkpoint: Path, tiny_demo_dir: Path,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A new subject's T2 at half the resolution of its T1 (as clinical scans come): refused by the
    checkpoint's preprocessing, naming the remedy; ``--resample-to-first`` resamples it onto the
    T1's grid, says so in the run's log, and writes the segmentation on the T1's grid."""
    from scipy import ndimage

    from conftest import write_analyze

    t1, t2 = tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"
    image = nib.load(str(t2))
    coarse = ndimage.zoom(np.asarray(image.dataobj, dtype=np.float32), 0.5, order=1)
    zooms = tuple(2 * z for z in image.header.get_zooms()[:3])
    write_analyze(np.round(coarse).astype(np.int16), tmp_path / "T2-coarse.hdr", zooms)
    args = ["--checkpoint", str(checkpoint), "--input", str(t1), str(tmp_path / "T2-coarse.hdr"),
            "--subject", "subject-4"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--output", str(tmp_path / "refused")])
    assert exited.value.code == 2
    assert "T2-coarse.hdr: shape" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    with warnings.catch_warnings():  # a 6 mm scan at 12 mm has lost the histogram the modality check knows it by
        warnings.filterwarnings("ignore", message=".*has the intensities of", category=DataWarning)
        main([*args, "--output", str(tmp_path / "out"), "--resample-to-first"])
    written = nib.load(str(tmp_path / "out" / "subject-4_seg.nii.gz"))
    assert written.shape == nib.load(str(t1)).shape[:3]
    np.testing.assert_allclose(written.affine, nib.load(str(t1)).affine)
    (run,) = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert run["resample_to_first"] is True


def test_same_segmentation_as_train_py_predict_and_from_the_files(checkpoint: Path, tiny_demo_dir: Path,
                                                                 tmp_path: Path) -> None:
    run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(tmp_path / "cli")])
    predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], tmp_path / "files")
    cli = np.asarray(nib.load(str(tmp_path / "cli" / "subject-4_seg.nii.gz")).dataobj)
    files = np.asarray(nib.load(str(tmp_path / "files" / "subject-4_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(files, cli)


def test_flips_probabilities_and_volumes(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    inputs = [tiny_demo_dir / "subject-2-T1.hdr", tiny_demo_dir / "subject-2-T2.hdr"]
    predict(checkpoint, inputs, tmp_path, flips=True, save_probabilities=True)
    maps = nib.load(str(tmp_path / "subject-2_probabilities.nii.gz"))
    segmentation = np.asarray(nib.load(str(tmp_path / "subject-2_seg.nii.gz")).dataobj)
    probs = np.asarray(maps.dataobj)
    assert probs.shape == (*segmentation.shape, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray([0, 10, 150, 250])[probs.argmax(-1)], segmentation)
    with open(tmp_path / "volumes.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    voxel_ml = abs(np.linalg.det(maps.affine[:3, :3])) / 1000
    for name, value in (("CSF", 10), ("GM", 150), ("WM", 250)):
        assert float(row[name]) == pytest.approx((segmentation == value).sum() * voxel_ml)


def test_inputs_that_do_not_fit_the_checkpoint(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match=r"trained on 2 modalities \['T1', 'T2'\] \(in this order\); got 1 files"):
        predict(checkpoint, [tiny_demo_dir / "subject-2-T1.hdr"], tmp_path)
    with pytest.raises(DataError, match="no iSeg subjects found"):
        predict(checkpoint, [tmp_path], tmp_path / "out")
    with pytest.raises(SystemExit) as exit_code:
        main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--input", str(tiny_demo_dir), "--output", str(tmp_path)])
    assert exit_code.value.code == 2 and "missing.ckpt: checkpoint not found" in capsys.readouterr().err


def test_subject_name_from_the_modality_files() -> None:
    from core.segmenter import subject_from_files

    def name(*files: str) -> str:
        return subject_from_files([Path(f) for f in files], ["a"] * len(files), "c.ckpt").subject_id

    assert name("in/subject-4-T1.hdr", "in/subject-4-T2.hdr") == "subject-4"
    assert name("BraTS20_Validation_001_t1.nii.gz", "BraTS20_Validation_001_t1ce.nii.gz") == "BraTS20_Validation_001"
    assert name("scan.nii.gz") == "scan"
    assert name("sub-01/mri/orig.mgz") == "orig" and name("case_0000.nhdr", "case_0001.nhdr") == "case"


def as_lia(image: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """``image``'s voxels in FreeSurfer's conformed order (axes L, I, A), as float32."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    image = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3]), image.affine)
    return image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt("LIA")))


def freesurfer_conformed(source: Path, out: Path) -> Path:
    """``source`` stored as FreeSurfer stores a conformed scan: MGZ, voxel axes L, I, A."""
    lia = as_lia(nib.load(str(source)))
    nib.save(nib.MGHImage(np.asarray(lia.dataobj), lia.affine), str(out))
    return out


def test_freesurfer_mgz_scans_segment_as_their_nifti_twins_in_their_own_space(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    """A subject's scans as FreeSurfer writes them (``T1.mgz``: gzipped MGH, voxel axes L, I, A) give the
    segmentation of the same scans as shipped, stored in the MGZ's own voxel order and affine; a
    flat folder of ``<subject>.mgz`` label maps is ground truth for ``evaluate.py``. (Once
    refused as corrupt: the size check read ``.mgz`` as uncompressed.)"""
    from evaluate import evaluate_folders

    shipped = predict(checkpoint, [tiny_demo_dir / f"subject-4-{m}.hdr" for m in ("T1", "T2")], tmp_path / "hdr")
    scans = [freesurfer_conformed(tiny_demo_dir / f"subject-4-{m}.hdr", tmp_path / f"{m}.mgz") for m in ("T1", "T2")]
    assert scans[0].stat().st_size < np.prod(nib.load(str(scans[0])).shape) * 4  # gzipped: smaller than its voxels
    (written,) = predict(checkpoint, scans, tmp_path / "mgz", subject_id="subject-4")
    segmentation, reference = nib.load(str(written)), nib.load(str(shipped[0]))
    assert nib.aff2axcodes(segmentation.affine) == ("L", "I", "A")
    np.testing.assert_allclose(segmentation.affine, nib.load(str(scans[0])).affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(segmentation.dataobj), np.asarray(as_lia(reference).dataobj))
    truth = tmp_path / "truth"
    truth.mkdir()
    label = nib.load(str(tiny_demo_dir / "subject-4-label.hdr"))
    nib.save(nib.MGHImage(np.asarray(label.dataobj, dtype=np.uint8).reshape(label.shape[:3]), label.affine),
             str(truth / "subject-4.mgz"))
    by_mgz, by_challenge = (evaluate_folders(tmp_path / "hdr", gt, "iseg") for gt in (truth, tiny_demo_dir))
    assert [r["dice"] for r in by_mgz] == [r["dice"] for r in by_challenge if r["subject"] == "subject-4"]


def test_evaluate_on_predict_output_gives_the_dice_of_train_py_test(checkpoint: Path, tiny_demo_dir: Path,
                                                                   tmp_path: Path) -> None:
    from evaluate import evaluate_folders

    run_with(checkpoint, tiny_demo_dir, "test",
             ["--test_report.output_dir", str(tmp_path / "test"), "--test_report.save_png", "false"])
    with open(tmp_path / "test" / "dice.csv") as handle:
        (tested,) = list(csv.DictReader(handle))
    predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], tmp_path / "pred")
    rows = evaluate_folders(tmp_path / "pred", tiny_demo_dir, "iseg")
    scores = {row["structure"]: row["dice"] for row in rows if row["subject"] == "subject-4"}
    assert set(scores) == {"CSF", "GM", "WM"}
    for structure, dice in scores.items():
        assert dice == pytest.approx(float(tested[structure]), abs=1e-6)
    from evaluate import provenance_text  # the scores name the checkpoint and settings that made them

    assert provenance_text(tmp_path / "pred", ["subject-4"]) == (
        f"\nPredictions of 1 subject by {checkpoint} (window [16, 16, 16], window_scale 2, sw_overlap 0.5, "
        "sw_batch_size 4, precision 32, flips False, probabilities False).\n")
    # A Trainer in bf16-mixed (the CPU's default where bf16 is native) still scores whole volumes
    # in float32, as predict.py does: the same Dice to the digit, and its report says float32.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "precision bf16-mixed: bfloat16 is emulated", DataWarning)  # an AVX2 CPU
        run_with(checkpoint, tiny_demo_dir, "test", ["--trainer.precision", "bf16-mixed", "--test_report.output_dir",
                                                      str(tmp_path / "bf16"), "--test_report.save_png", "false"])
    with open(tmp_path / "bf16" / "dice.csv") as handle:
        (under_bf16,) = list(csv.DictReader(handle))
    assert {s: under_bf16[s] for s in scores} == {s: tested[s] for s in scores}
    assert json.loads((tmp_path / "bf16" / "evaluation.json").read_text())["model"]["precision"] == "32"


def test_case_names_for_a_submission(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    """``--case-names``: ``<case>.nii.gz`` (what BraTS takes as a submission, nnU-Net's naming),
    the same voxels as ``<case>_seg.nii.gz``, paired by evaluate.py alike, and the same file from
    ``train.py predict --prediction_writer.case_names``; a BIDS derivative's names are its
    entities, so there it is refused."""
    from datamodules.folders import output_names
    from evaluate import evaluate_folders

    files = [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"]
    (ours,) = predict(checkpoint, files, tmp_path / "ours")
    (case,) = predict(checkpoint, files, tmp_path / "case", case_names=True)
    assert (ours.name, case.name) == ("subject-4_seg.nii.gz", "subject-4.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(case)).dataobj), np.asarray(nib.load(str(ours)).dataobj))
    run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(tmp_path / "cli"),
                                                     "--prediction_writer.case_names", "true"])
    assert sorted(p.name for p in (tmp_path / "cli").glob("*.nii.gz")) == ["subject-4.nii.gz"]
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "cli" / "subject-4.nii.gz")).dataobj),
                                  np.asarray(nib.load(str(case)).dataobj))
    assert evaluate_folders(tmp_path / "case", tiny_demo_dir, "iseg") == evaluate_folders(tmp_path / "ours",
                                                                                        tiny_demo_dir, "iseg")
    with pytest.raises(DataError, match="BIDSDataModule writes a BIDS derivative, named by its entities: "
                                        "--case-names is for folders of files"):
        output_names({"class_path": "datamodules.BIDSDataModule"}, case_names=True)
    from core.bids import BIDS_NAMES
    from core.export import named_by_case

    with pytest.raises(DataError, match="prediction_writer.case_names is for folders of files"):
        named_by_case(BIDS_NAMES, "BIDSDataModule", "prediction_writer.case_names")


def test_train_py_predict_writes_the_same_files_with_flips_and_probabilities(checkpoint: Path, tiny_demo_dir: Path,
                                                                              tmp_path: Path) -> None:
    run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(tmp_path / "cli"),
                                                     "--prediction_writer.flips", "true",
                                                     "--prediction_writer.probabilities", "true"])
    predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], tmp_path / "files",
            flips=True, save_probabilities=True)
    for name in ("subject-4_seg.nii.gz", "subject-4_probabilities.nii.gz"):
        cli = np.asarray(nib.load(str(tmp_path / "cli" / name)).dataobj)
        files = np.asarray(nib.load(str(tmp_path / "files" / name)).dataobj)
        np.testing.assert_allclose(files, cli, atol=1e-6)
    assert (tmp_path / "cli" / "volumes.csv").read_text() == (tmp_path / "files" / "volumes.csv").read_text()


def test_segmenter_in_three_lines_writes_what_predict_py_writes(checkpoint: Path, tiny_demo_dir: Path,
                                                                tmp_path: Path) -> None:
    from core.segmenter import Segmenter

    files = [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"]
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    segmenter.segment(files).to_filename(tmp_path / "notebook.nii.gz")
    (written,) = predict(checkpoint, files, tmp_path / "cli")
    # gzip stores a time stamp; the NIfTI bytes inside (header and voxels) are identical.
    assert gzip.decompress((tmp_path / "notebook.nii.gz").read_bytes()) == gzip.decompress(written.read_bytes())


def legacy_checkpoint(checkpoint: Path, path: Path) -> Path:
    """``checkpoint`` as written before the label space was stored whole: separate
    ``num_classes``, ``class_names`` and ``label_values`` model arguments."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    space = data["hyper_parameters"].pop("label_space")
    data["hyper_parameters"].update(num_classes=len(space["classes"]), class_names=list(space["classes"]),
                                    label_values=list(space["classes"].values()), regions=None, region_names=None)
    torch.save(data, path)
    return path


def test_checkpoints_written_before_the_label_space_still_load(checkpoint: Path, tiny_demo_dir: Path,
                                                                tmp_path: Path) -> None:
    from lightning_modules import SegmentationModule

    old = legacy_checkpoint(checkpoint, tmp_path / "old.ckpt")
    assert "label_space" not in torch.load(old, weights_only=True)["hyper_parameters"]
    model = SegmentationModule.load_from_checkpoint(old)
    assert model.labels.class_values == (0, 10, 150, 250) and model.labels.structure_names == ["CSF", "GM", "WM"]
    files = [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"]
    (new_file,), (old_file,) = predict(checkpoint, files, tmp_path / "new"), predict(old, files, tmp_path / "old")
    np.testing.assert_array_equal(np.asarray(nib.load(new_file).dataobj), np.asarray(nib.load(old_file).dataobj))
    run_with(old, tiny_demo_dir, "test", ["--test_report.output_dir", str(tmp_path / "test"),
                                          "--test_report.save_png", "false"])
    assert (tmp_path / "test" / "metrics.csv").is_file()


class Payload:
    """Pickled into a checkpoint, this would run code on a plain ``torch.load``."""

    def __reduce__(self) -> tuple:
        return (print, ("code ran from a checkpoint",))


def test_checkpoints_are_loaded_without_running_code(checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loader (Segmenter / predict.py, load_from_checkpoint, train.py --ckpt_path,
    compare_runs.py) refuses a checkpoint carrying a pickle payload, and runs nothing."""
    from compare_runs import load_run
    from core.segmenter import Segmenter
    from datamodules.folders import datamodule_class
    from lightning_modules import SegmentationModule
    from train import main as train_main

    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data["payload"] = Payload()
    torch.save(data, tmp_path / "evil.ckpt")
    evil = tmp_path / "evil.ckpt"
    refused = r"evil\.ckpt: cannot read the checkpoint \(UnpicklingError"
    with pytest.raises(DataError, match=refused):
        Segmenter.from_checkpoint(evil)
    with pytest.raises(DataError, match=refused):
        SegmentationModule.load_from_checkpoint(evil)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    evil.rename(tmp_path / "run" / "checkpoints" / "best.ckpt")
    with pytest.raises(DataError, match=r"best\.ckpt: cannot read the checkpoint \(UnpicklingError"):
        load_run(tmp_path / "run" / "test" / "metrics.csv")
    (tmp_path / "run" / "checkpoints" / "best.ckpt").rename(evil)
    monkeypatch.setattr(sys, "argv", ["train.py", "test", "--config", "configs/demo.yaml", "--ckpt_path", str(evil),
                                      "--trainer.logger", "false"])
    with pytest.raises(SystemExit) as exit_code:
        train_main()
    assert exit_code.value.code == 2
    captured = capsys.readouterr()
    assert "code ran" not in captured.out + captured.err
    assert re.search(r"train\.py: error: .*evil\.ckpt: cannot read the checkpoint \(UnpicklingError", captured.err)
    with pytest.raises(DataError, match=r"names the DataModule 'os.system', which is not one of"):
        datamodule_class("os.system", "c.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"truncated\.ckpt: cannot read the checkpoint"):
        Segmenter.from_checkpoint(tmp_path / "truncated.ckpt")


def test_raw_intensities_are_refused_by_the_tensor_path(checkpoint: Path, tiny_demo_dir: Path) -> None:
    from core.io import load_volume
    from core.segmenter import Segmenter
    from core.volumes import load_subject

    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    subject = segmenter.subject([tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"])
    volume = load_subject(subject, None, segmenter.preprocessing)
    preprocessed = torch.from_numpy(volume.image)[None]
    assert segmenter.probabilities(preprocessed).shape == (1, 4, *volume.image.shape[1:])
    raw = torch.from_numpy(np.stack([load_volume(f)[0] for f in subject.images]))[None]  # scanner intensities
    with pytest.raises(ValueError, match=r"input channel 0 of volume 0 has mean .* Segmenter\.segment\(files\)"):
        segmenter.probabilities(raw)


def test_outputs_never_replace_what_they_must_not(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    files = [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"]
    out = tmp_path / "out"
    (first,) = predict(checkpoint, files, out)
    with pytest.raises(DataError, match=r"subject-4_seg\.nii\.gz: exists \(an earlier prediction\); pass --overwrite"):
        predict(checkpoint, files, out)
    assert predict(checkpoint, files, out, overwrite=True) == [first]
    # A file this codebase did not write (a ground truth named like a prediction) is never replaced.
    truth = nib.load(str(tiny_demo_dir / "subject-4-label.hdr"))
    nib.save(nib.Nifti1Image(np.asarray(truth.dataobj), truth.affine), str(out / "subject-4_seg.nii.gz"))
    before = (out / "subject-4_seg.nii.gz").read_bytes()
    with pytest.raises(DataError, match=r"subject-4_seg\.nii\.gz: exists and was not written by a prediction"):
        predict(checkpoint, files, out, overwrite=True)
    assert (out / "subject-4_seg.nii.gz").read_bytes() == before
    # Nor an input file, whatever the flags.
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, source in (("case_seg.nii.gz", files[0]), ("case_t2.nii.gz", files[1])):
        image = nib.load(str(source))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), str(scans / name))
    with pytest.raises(DataError, match=r"case_seg\.nii\.gz: is an input file"):
        predict(checkpoint, [scans / "case_seg.nii.gz", scans / "case_t2.nii.gz"], scans, subject_id="case",
                overwrite=True)
    # A failed run leaves no empty output folder; files are created with the umask's mode.
    with pytest.raises(DataError):
        predict(checkpoint, files[:1], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert (first.stat().st_mode & 0o777) == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_volumes_csv_keeps_every_row_under_repeated_and_concurrent_runs(tmp_path: Path) -> None:
    from core.dataset_labels import ISEG
    from core.export import PredictionFolder, Segmentation

    def run(subject: str, csf_voxels: int) -> None:
        classes = np.zeros((10, 10, 10), dtype=np.int64)
        classes.flat[:csf_voxels] = 1
        folder = PredictionFolder(tmp_path, overwrite=True)
        folder.write(Segmentation(subject, classes, np.diag([2.0, 2.0, 2.5, 1.0]), ISEG))  # 10 mm^3 voxels
        folder.close()

    run("s10", 1)  # written first, listed last
    threads = [threading.Thread(target=run, args=(f"s{i}", 100 * i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run("s3", 7)  # a subject segmented again: its row is replaced, the others kept
    with open(tmp_path / "volumes.csv") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    assert list(rows) == [f"s{i}" for i in (*range(8), 10)]  # natural order, whichever thread ended first
    assert float(rows["s5"]["CSF"]) == pytest.approx(5.0) and float(rows["s3"]["CSF"]) == pytest.approx(0.07)


def data_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataWarning)]


def test_swapped_or_repeated_modalities_get_a_warning_naming_the_files(checkpoint: Path, tiny_demo_dir: Path,
                                                                      tmp_path: Path) -> None:
    """The checkpoint keeps the training scans' intensity profile per modality; inputs in the
    wrong order, or one file given twice, are segmented but flagged with the files' names."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["modality_profiles"]
    assert saved["modalities"] == ["T1", "T2"] and len(saved["mean"][0]) == len(saved["quantiles"]) == 9
    t1, t2 = tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [t1, t2], tmp_path / "right")
    assert data_warnings(record) == []
    assert "input_problems" not in json.loads((tmp_path / "right" / "predictions.jsonl").read_text())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [t2, t1], tmp_path / "swapped")
    (message,) = data_warnings(record)
    assert message.startswith(f"subject-4: {t1} (given as T2) has the intensities of T1 (profile distance ")
    assert message.endswith("are the modalities in the order T1, T2?")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [t1, t1], tmp_path / "twice", subject_id="subject-4")
    assert f"subject-4: {t1} (given as T1) and {t1} (given as T2) hold the same image" in data_warnings(record)[0]
    # A label map given as T2 is unlike every training T2: said where the profile has the 5 training subjects
    # it needs to measure a spread by (the tiny demo's has 2: recorded as 5 here), with the distance
    label = tiny_demo_dir / "subject-4-label.hdr"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [t1, label], tmp_path / "label", subject_id="subject-4")
    assert saved["subjects"] == 2 and data_warnings(record) == []
    five = torch.load(checkpoint, map_location="cpu", weights_only=True)
    five["modality_profiles"]["subjects"] = 5
    torch.save(five, tmp_path / "five.ckpt")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(tmp_path / "five.ckpt", [t1, label], tmp_path / "label5", subject_id="subject-4")
    (message,) = data_warnings(record)
    assert message.startswith(f"subject-4: {label} (given as T2) has intensities unlike every training scan's T2 "
                              "(profile distance ")


def test_train_py_predict_warns_about_swapped_modalities_too(checkpoint: Path, tiny_demo_dir: Path,
                                                            tmp_path: Path) -> None:
    swapped = tmp_path / "iSeg-2017-Testing"
    swapped.mkdir()
    for source, target in (("T1", "T2"), ("T2", "T1")):  # files named the other way round
        for suffix in (".hdr", ".img"):
            (swapped / f"subject-4-{target}{suffix}").write_bytes(
                (tiny_demo_dir / f"subject-4-{source}{suffix}").read_bytes())
    with pytest.warns(DataWarning, match=r"subject-4: input channel 1 \(given as T2\) has the intensities of T1"):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--data.init_args.predict_dir", str(swapped),
                                                       "--prediction_writer.output_dir", str(tmp_path / "out")])


def test_a_single_slice_or_a_thin_slab_gets_a_warning(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path) -> None:
    """A slice (or a slab thinner than a quarter of the training patch) of a 3D model's volume is
    segmented with a warning saying so; a slab of a quarter is not (nor the whole volume). The
    demo model given subject 9's middle axial slice scored CSF/GM/WM 0.72/0.63/0.78 in silence."""
    from core.segmenter import thin_axes_problem

    assert thin_axes_problem((40, 40, 3), (16, 16, 16)) == (
        "3 voxels along axis 2 on the network's grid, where the model was trained on 16x16x16 patches: a single "
        "slice or a thin slab lacks the 3D context the network learned and is segmented worse; give the whole volume")
    assert thin_axes_problem((40, 40, 4), (16, 16, 16)) is None and thin_axes_problem((40, 40, 1), (64, 64, 1)) is None
    files = {}
    for slices in (1, 4):
        for modality in ("T1", "T2"):
            image = nib.load(str(tiny_demo_dir / f"subject-4-{modality}.hdr"))
            data = np.asarray(image.dataobj, np.float32).reshape(image.shape[:3])
            middle = data.shape[2] // 2
            files[slices, modality] = tmp_path / f"slab{slices}-{modality}.nii.gz"
            nib.save(nib.Nifti1Image(data[:, :, middle:middle + slices], image.affine), str(files[slices, modality]))
    for slices in (1, 4):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            (written,) = predict(checkpoint, [files[slices, "T1"], files[slices, "T2"]], tmp_path / f"out{slices}")
        said = [w for w in data_warnings(record) if "along axis" in w]
        assert said == ([f"slab1: {thin_axes_problem((40, 40, 1), (16, 16, 16))}"] if slices == 1 else [])
        assert nib.load(str(written)).shape[2] == slices  # segmented all the same, in the scan's own space
    # The rule compares with the patches trained on, never with an inference window the checkpoint was
    # given (a DenseNet's 64^3): as validation and test do.
    from core.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint(checkpoint, "cpu")
    assert segmenter.training_window == (16, 16, 16)
    wider = dataclasses.replace(segmenter, roi_size=(64, 64, 64))
    assert wider.training_window == (16, 16, 16)
    assert dataclasses.replace(wider, patch_size=None).training_window == (64, 64, 64)  # built without: its window


def test_a_scan_whose_background_is_not_zero_gets_a_warning(checkpoint: Path, tiny_demo_dir: Path,
                                                            tmp_path: Path) -> None:
    """The checkpoint keeps how much of each training scan is exact zero (skull-stripped
    background); a scan whose background holds small values (registration's interpolation
    ringing) is segmented with a warning naming the file, through predict.py, train.py predict
    and train.py test alike; the clean scan gets none (the swapped-modality test above)."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["modality_profiles"]
    assert len(saved["zeros"]) == 2 and min(saved["zeros"]) > 0.2
    ringing = tmp_path / "iSeg-2017-Testing"
    ringing.mkdir()
    rng = np.random.default_rng(0)
    for subject, modality in ((s, m) for s in ("subject-3", "subject-4") for m in ("T1", "T2", "label")):
        image = nib.load(str(tiny_demo_dir / f"{subject}-{modality}.hdr"))
        data = np.asarray(image.dataobj, np.float32).reshape(image.shape[:3])
        if modality != "label":
            background = data == 0
            data[background] = rng.normal(0, 1e-3 * data[~background].mean(), background.sum())
        nib.save(nib.AnalyzeImage(data.astype(np.uint8 if modality == "label" else np.float32), image.affine),
                 str(ringing / f"{subject}-{modality}.hdr"))
    t2 = ringing / "subject-4-T2.hdr"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [ringing / "subject-4-T1.hdr", t2], tmp_path / "own")
    t1_said, t2_said = data_warnings(record)
    assert t2_said.startswith(f"subject-4: {t2} (given as T2) has 0.0% of its voxels at 0, the training scans at "
                              f"least {min(saved['zeros']):.0%} (a skull-stripped scan's background)")
    assert t2_said.endswith("or a threshold, where registration's interpolation left small values there)")
    # Its brain mask given (the clean scan's non-zero voxels), the same scans segment as the clean ones, unflagged
    clean = tmp_path / "clean"
    (clean_seg,) = predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], clean)
    source = nib.load(tiny_demo_dir / "subject-4-T1.hdr")
    mask = tmp_path / "subject-4_mask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(source.dataobj).reshape(source.shape[:3]) != 0).astype(np.uint8),
                             source.affine), mask)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        (masked,) = predict(checkpoint, [ringing / "subject-4-T1.hdr", t2], tmp_path / "masked", brain_mask=mask)
    assert data_warnings(record) == []
    np.testing.assert_array_equal(np.asarray(nib.load(masked).dataobj), np.asarray(nib.load(clean_seg).dataobj))
    from core.export import stamp_of
    from core.segmenter import Segmenter

    in_memory = Segmenter.from_checkpoint(checkpoint).segment([ringing / "subject-4-T1.hdr", t2], brain_mask=mask)
    np.testing.assert_array_equal(np.asarray(in_memory.dataobj), np.asarray(nib.load(clean_seg).dataobj))
    assert stamp_of(masked)["brain_masks"] is True and "brain_masks" not in stamp_of(clean_seg)  # what made them
    in_memory.to_filename(tmp_path / "in_memory.nii.gz")
    assert stamp_of(tmp_path / "in_memory.nii.gz") == stamp_of(masked)
    # A crop inside the brain has no background to lose: its faces are tissue, not flat (demo subject 9's
    # 16³ and 32³ crops were flagged before, their ringing and offset scans still are)
    from core.modality_profiles import has_background_frame

    inside = []
    for name in ("subject-4-T1.hdr", "subject-4-T2.hdr"):
        scan = nib.load(str(ringing / name))
        data = np.asarray(scan.dataobj, np.float32).reshape(scan.shape[:3])
        brain = np.argwhere(np.asarray(nib.load(str(tiny_demo_dir / name)).dataobj).reshape(scan.shape[:3]) > 0)
        centre = (brain.min(0) + brain.max(0)) // 2
        crop = data[tuple(slice(c - 4, c + 4) for c in centre)]
        assert has_background_frame(data) and not has_background_frame(crop)
        inside.append(tmp_path / f"inside-{name.replace('.hdr', '.nii.gz')}")
        nib.save(nib.Nifti1Image(crop, scan.affine), str(inside[-1]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, inside, tmp_path / "inside")
    assert not [w for w in data_warnings(record) if "of its voxels at 0" in w]
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(source.shape[:3], np.uint8), source.affine), empty)
    with pytest.raises(DataError, match=r"empty_mask\.nii\.gz: the brain mask is empty"):
        predict(checkpoint, [ringing / "subject-4-T1.hdr", t2], tmp_path / "empty", brain_mask=empty)
    with pytest.raises(DataError, match=r"subject-4_mask\.nii\.gz: --brain-mask with a dataset folder names the "
                                        r"derivatives pipeline of a BIDS dataset's brain masks .* reads "
                                        r"ISeg2017DataModule folders .*; in another layout give one subject's files "
                                        r"and its mask"):
        predict(checkpoint, [ringing], tmp_path / "folder", brain_mask=mask)
    # The log keeps what was said of each subject, and evaluate.py's summary says it of the scored ones
    import evaluate

    (run,) = [json.loads(line) for line in (tmp_path / "own" / "predictions.jsonl").read_text().splitlines()]
    assert run["input_problems"] == {"subject-4": [t1_said.removeprefix("subject-4: "),
                                                   t2_said.removeprefix("subject-4: ")]}
    assert evaluate.main(["--pred", str(tmp_path / "own"), "--gt", str(tiny_demo_dir), "--dataset", "iseg"]) == 0
    summary = (tmp_path / "own" / "summary.md").read_text()
    assert ("\n1 of 1 scored subjects were segmented from scans unlike the training scans (said at prediction; their "
            "scores are not the model's on scans like its own):\n- subject-4: " + t1_said.removeprefix("subject-4: ")
            + "; " + t2_said.removeprefix("subject-4: ") + "\n") in summary
    assert "input_problems" not in summary.split("unlike the training scans")[0]  # not a setting of the run
    expected = r"subject-4: input channel 1 \(given as T2\) has 0\.0% of its voxels at 0"
    with pytest.warns(DataWarning, match=expected):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--data.init_args.predict_dir", str(ringing),
                                                       "--prediction_writer.output_dir", str(tmp_path / "cli")])
    (run,) = [json.loads(line) for line in (tmp_path / "cli" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(run["input_problems"]) == ["subject-3", "subject-4"]
    assert run["input_problems"]["subject-4"][1].startswith("input channel 1 (given as T2) has 0.0% of its voxels")
    with pytest.warns(DataWarning, match=expected):
        run_with(checkpoint, ringing, "test", ["--test_report.output_dir", str(tmp_path / "test"),
                                               "--test_report.save_png", "false"])
    with open(tmp_path / "test" / "input_problems.csv") as handle:  # kept beside the scores they concern
        rows = list(csv.DictReader(handle))
    assert [(r["subject"], r["problem"][:57]) for r in rows] == [
        ("subject-4", f"input channel {c} (given as T{c + 1}) has 0.0% of its voxels at 0") for c in (0, 1)]


def test_a_scan_at_another_spacing_than_the_training_scans_gets_a_warning(checkpoint: Path, tiny_demo_dir: Path,
                                                                         tmp_path: Path) -> None:
    """The checkpoint keeps the training volumes' voxel spacing (the tiny demo's 6 mm); the same
    subject at 3 mm, given to a model that did not resample (no ``target_spacing``), is segmented
    with a warning that says by how much, through predict.py and train.py predict alike, and
    ``train.py test`` says it of the subjects it scores."""
    from nibabel.processing import resample_to_output

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["training_spacing"]
    assert saved == {"low": [6.0, 6.0, 6.0], "high": [6.0, 6.0, 6.0]}
    finer = tmp_path / "iSeg-2017-Testing"
    finer.mkdir()
    for subject, modality in ((s, m) for s in ("subject-3", "subject-4") for m in ("T1", "T2", "label")):
        image = nib.load(str(tiny_demo_dir / f"{subject}-{modality}.hdr"))
        image = nib.Nifti1Image(np.asarray(image.dataobj, np.float32).reshape(image.shape[:3]), image.affine)
        resampled = resample_to_output(image, voxel_sizes=(3.0, 3.0, 3.0), order=0 if modality == "label" else 1)
        data = np.asarray(resampled.dataobj)
        data = np.rint(data).astype(np.uint8) if modality == "label" else data.astype(np.int16)
        nib.save(nib.AnalyzeImage(data, resampled.affine), str(finer / f"{subject}-{modality}.hdr"))
    expected = (r"subject-4: voxels of 3 x 3 x 3 mm on the network's grid, where the model was trained on 6 x 6 x 6 "
                r"mm: it sees structures up to 2x larger in voxels than it learned them, and segments them worse "
                r"\(a model trained on scans of this spacing")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], tmp_path / "own")
    assert data_warnings(record) == []
    with pytest.warns(DataWarning, match=expected):
        predict(checkpoint, [finer / "subject-4-T1.hdr", finer / "subject-4-T2.hdr"], tmp_path / "finer")
    with pytest.warns(DataWarning, match=expected):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--data.init_args.predict_dir", str(finer),
                                                       "--prediction_writer.output_dir", str(tmp_path / "cli")])
    with pytest.warns(DataWarning, match=expected):
        run_with(checkpoint, finer, "test", ["--test_report.output_dir", str(tmp_path / "test"),
                                             "--test_report.save_png", "false"])
    # With target_spacing (a model whose grid every scan is resampled to) the 3 mm scan is seen at 6 mm: no
    # warning, the segmentation back on the scan's grid, the spacing in the run's log.
    from dataclasses import replace

    from core.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint(checkpoint, "cpu")
    segmenter.preprocessing = replace(segmenter.preprocessing, target_spacing=(6.0, 6.0, 6.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        subject = segmenter.subject([finer / f"subject-4-{m}.hdr" for m in ("T1", "T2")])
        (written,) = segmenter.segment_to_folder([subject], tmp_path / "resampled", progress=False)
    # (the modality check may flag a 6 mm scan blurred twice: the tiny volumes' histograms lose their shape)
    assert [m for m in data_warnings(record) if "voxels of" in m] == []
    scan = nib.load(str(finer / "subject-4-T1.hdr"))
    assert nib.load(str(written)).shape == scan.shape[:3]
    np.testing.assert_allclose(nib.load(str(written)).affine, scan.affine)
    (run,) = [json.loads(line) for line in (tmp_path / "resampled" / "predictions.jsonl").read_text().splitlines()]
    assert run["target_spacing"] == [6.0, 6.0, 6.0]


@pytest.fixture(scope="module")
def second_checkpoint(tiny_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same task (another seed): a second ensemble member."""
    run = tmp_path_factory.mktemp("run_seed1")
    run_cli(tiny_run_args("fit", tiny_demo_dir, None, "--seed_everything", "1", "--trainer.max_epochs", "1",
                          "--checkpoint.dirpath", str(run / "checkpoints")), save_config=False)
    return run / "checkpoints" / "last.ckpt"


def test_an_ensemble_averages_its_members_probabilities(checkpoint: Path, second_checkpoint: Path,
                                                        tiny_demo_dir: Path, tmp_path: Path) -> None:
    from core.segmenter import Ensemble, Segmenter, load_segmenter
    from core.volumes import load_subject

    ensemble = load_segmenter([checkpoint, second_checkpoint], "cpu")
    assert isinstance(ensemble, Ensemble) and ensemble.modalities == ("T1", "T2")
    first, second = (Segmenter.from_checkpoint(p, "cpu") for p in (checkpoint, second_checkpoint))
    files = [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"]
    volume = load_subject(ensemble.subject(files), None, ensemble.preprocessing)
    image = torch.from_numpy(np.asarray(volume.image))[None]
    with torch.no_grad():
        a, b, both = first.probabilities(image), second.probabilities(image), ensemble.probabilities(image)
    assert not torch.allclose(a, b, atol=1e-3)  # two different models
    torch.testing.assert_close(both, (a + b) / 2)
    # predict.py with two checkpoints writes the class map of the averaged probabilities.
    main(["--checkpoint", str(checkpoint), str(second_checkpoint), "--input", *map(str, files),
          "--output", str(tmp_path / "ensemble")])
    written = np.asarray(nib.load(str(tmp_path / "ensemble" / "subject-4_seg.nii.gz")).dataobj)
    expected = ensemble.segment_volume(volume).image()
    np.testing.assert_array_equal(written, np.asarray(expected.dataobj))
    (logged,) = [json.loads(line) for line in (tmp_path / "ensemble" / "predictions.jsonl").read_text().splitlines()]
    assert [member["checkpoint"] for member in logged["ensemble"]] == [str(checkpoint), str(second_checkpoint)]


@pytest.mark.parametrize(("key", "value", "what", "difference"), [
    ("modalities", ["T2", "T1"], "modalities", r"\['T2', 'T1'\] vs \['T1', 'T2'\]"),
    ("label_space", {"classes": {"background": 0, "A": 1, "B": 2, "C": 3},  # 4 classes, but not iSeg's
                     "value_to_class": {"0": 0, "1": 1, "2": 2, "3": 3}}, "label space",
     r"classes \{'background': 0, 'A': 1, .*\} vs \{'background': 0, 'CSF': 10, .*; value_to_class .*"),
    ("crop_to_nonzero", True, "preprocessing", r"crop_to_nonzero True vs False"),  # only what differs
])
def test_an_ensemble_refuses_members_of_another_task(checkpoint: Path, tmp_path: Path, key: str, value: object,
                                                     what: str, difference: str) -> None:
    from core.checkpoint import DATAMODULE_ARGS
    from core.segmenter import load_segmenter

    other = torch.load(checkpoint, map_location="cpu", weights_only=True)
    other[DATAMODULE_ARGS if key == "crop_to_nonzero" else "hyper_parameters"][key] = value
    path = tmp_path / "other.ckpt"
    torch.save(other, path)
    with pytest.raises(DataError, match=rf"^{path}: its {what} differs from {checkpoint}'s \({difference}\); an "
                                        "ensemble averages models of one task$"):
        load_segmenter([checkpoint, path], "cpu")


def test_the_cpu_preset_uses_larger_windows_less_overlap_and_no_mirroring(checkpoint: Path, tiny_demo_dir: Path,
                                                                          tmp_path: Path) -> None:
    from core.segmenter import Segmenter

    assert Segmenter.from_checkpoint(checkpoint, "cpu").window_scale == 2  # the checkpoint's (configs/demo.yaml)
    segmenter = Segmenter.from_checkpoint(checkpoint, "cpu", window_scale=1)  # given: wins
    assert segmenter.window((27, 33, 29)) == (16, 16, 16)
    segmenter.window_scale = 2
    # Twice the 16^3 training window, but never more than the volume in whole 16-voxel windows.
    assert segmenter.window((27, 33, 29)) == (32, 32, 32) and segmenter.window((12, 40, 20)) == (16, 32, 32)
    files = [str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")]
    main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(tmp_path / "fast"), "--cpu-fast"])
    fast = nib.load(str(tmp_path / "fast" / "subject-4_seg.nii.gz"))
    source = nib.load(files[0])
    assert fast.shape == source.shape[:3] and set(np.unique(np.asarray(fast.dataobj))) <= {0, 10, 150, 250}


def test_the_cpu_preset_keeps_a_checkpoints_larger_windows_and_a_given_scale(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--cpu-fast`` windows are at least twice the patch: a checkpoint saved with larger ones
    (``window_scale: 3``) keeps them, and ``--window-scale`` given wins over both."""
    import predict as predict_module

    wide = torch.load(checkpoint, map_location="cpu", weights_only=True)
    wide["hyper_parameters"]["window_scale"] = 3
    torch.save(wide, tmp_path / "wide.ckpt")
    used = {}
    monkeypatch.setattr(predict_module, "predict", lambda *args, **kwargs: used.update(kwargs))
    for checkpoints, given, expected in ([[checkpoint], [], 2], [[tmp_path / "wide.ckpt"], [], 3],
                                         [[checkpoint, tmp_path / "wide.ckpt"], [], 3],
                                         [[tmp_path / "wide.ckpt"], ["--window-scale", "2"], 2],
                                         [[checkpoint], ["--window-scale", "4"], 4]):
        main(["--checkpoint", *map(str, checkpoints), "--input", "x.nii.gz", "--output", str(tmp_path / "out"),
              "--cpu-fast", "--threads", "1", *given])
        assert used["window_scale"] == expected, (checkpoints, given)
        assert used["sw_overlap"] == 0.25 and used["flips"] is False and used["sw_batch_size"] == 1
    with pytest.raises(SystemExit) as exit_info:  # a checkpoint that is not there: one line, not a traceback
        main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--input", "x.nii.gz", "--output", str(tmp_path / "o"),
              "--cpu-fast", "--threads", "1"])
    assert exit_info.value.code == 2


def test_bf16_prediction_runs_the_network_in_bfloat16_and_keeps_float32_outputs(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--precision bf16`` (and ``--cpu-fast`` on a CPU with native bf16): the convolutions run
    in bfloat16, the windows are blended and the probabilities returned in float32, close to the
    float32 prediction."""
    from core import inference
    from core.inference import fast_bf16
    from core.io import DataWarning
    from core.segmenter import Segmenter
    from core.volumes import load_subject

    full = Segmenter.from_checkpoint(checkpoint, "cpu")
    with monkeypatch.context() as patch:  # where bf16 is emulated (an AVX2 CPU), it is said at once
        patch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True})
        with pytest.warns(DataWarning, match=r"^precision bf16: bfloat16 is emulated on this CPU \(no AVX512-BF16 or "
                                             r"AMX\), many times slower than float32; segment in float32 "
                                             r"\(predict\.py --precision 32\)$"):
            Segmenter.from_checkpoint(checkpoint, "cpu", precision="bf16")
        patch.setattr(inference.torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": True})
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            half = Segmenter.from_checkpoint(checkpoint, "cpu", precision="bf16")
    seen: list[torch.dtype] = []
    half.network.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    subject = full.subject([str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")])
    image = torch.from_numpy(load_subject(subject, None, full.preprocessing).image)[None]
    expected, got = full.probabilities(image), half.probabilities(image)
    assert set(seen) == {torch.bfloat16} and got.dtype == torch.float32
    assert float((got - expected).abs().max()) < 0.05  # bfloat16 keeps about 3 significant digits
    assert float((got.argmax(1) == expected.argmax(1)).float().mean()) > 0.99
    with pytest.raises(ValueError, match="precision must be one of 32, bf16, got 'fp8'"):
        Segmenter.from_checkpoint(checkpoint, "cpu", precision="fp8").probabilities(image)
    with pytest.raises(SystemExit) as exit_info:  # predict.py says it before reading anything
        main(["--checkpoint", str(checkpoint), "--input", "x.nii.gz", "--output", str(tmp_path / "o"),
              "--precision", "fp8"])
    assert exit_info.value.code == 2 and not (tmp_path / "o").exists()
    assert fast_bf16("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and fast_bf16("meta") is False
    files = [str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")]
    main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(tmp_path / "bf16"), "--precision",
          "bf16"])
    written = np.asarray(nib.load(str(tmp_path / "bf16" / "subject-4_seg.nii.gz")).dataobj)
    assert written.shape == nib.load(files[0]).shape[:3] and set(np.unique(written)) <= {0, 10, 150, 250}
    chosen: list[str] = []
    monkeypatch.setattr("predict.predict", lambda *args, **kwargs: chosen.append(kwargs["precision"]))
    for flags in (["--cpu-fast"], ["--cpu-fast", "--precision", "32"], []):
        main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(tmp_path / "x"), *flags])
    assert chosen == ["bf16" if fast_bf16("cpu") else "32", "32", "32"]  # an explicit --precision wins


def test_an_unwritable_output_is_one_line_before_any_work(checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """predict.py's output problems, each one line (exit 2) naming the path and the cause, before
    any inference: a file in the folder's place, a folder that cannot be written, too little free
    space; a disk that fills during the run leaves no partial file."""
    import shutil

    import core.segmenter

    files = [str(tiny_demo_dir / f"subject-4-{m}.hdr") for m in ("T1", "T2")]
    inferred = []
    real_probabilities = core.segmenter.Segmenter.probabilities
    monkeypatch.setattr(core.segmenter.Segmenter, "probabilities",
                        lambda self, *a, **k: inferred.append(1) or real_probabilities(self, *a, **k))

    def refused(output: Path) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(output)])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1 and not inferred, error
        return error

    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    assert f"predict.py: error: {a_file}: is a file, not a folder" in refused(a_file)
    assert f"{a_file}: is a file, not a folder" in refused(a_file / "inside")
    real_access = os.access
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != read_only and real_access(p, mode))
    assert f"{read_only}: not writable (permission denied or a read-only file system)" in refused(read_only / "out")
    monkeypatch.setattr(os, "access", real_access)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert re.search(r"out: 1 KiB free, the predictions need about [\d.]+ [KM]iB", refused(tmp_path / "out"))
    monkeypatch.undo()

    def disk_full(image: object, path: str) -> None:
        Path(path).write_bytes(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--input", *files, "--output", str(tmp_path / "full")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert "subject-4_seg.nii.gz: cannot write (No space left on device" in error
    assert list((tmp_path / "full").iterdir()) == []  # nothing half-written


def test_train_py_predict_refuses_before_any_work_what_predict_py_refuses(
        checkpoint: Path, tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.py predict`` checks its output folder as ``predict.py`` does, before any volume is
    read or segmented: a file it did not write, an earlier prediction without ``overwrite``, a
    file in the folder's place."""
    from datamodules import cache
    from lightning_modules import SegmentationModule

    work = []
    monkeypatch.setattr(SegmentationModule, "predict_step", lambda *a, **k: work.append("inference"))
    real_load = cache.load_subject  # what the DataModule reads a subject with (no cache here)
    monkeypatch.setattr(cache, "load_subject", lambda *a, **k: work.append("read") or real_load(*a, **k))
    out = tmp_path / "out"
    out.mkdir()
    truth = nib.load(str(tiny_demo_dir / "subject-4-label.hdr"))
    nib.save(nib.Nifti1Image(np.asarray(truth.dataobj), truth.affine), str(out / "subject-4_seg.nii.gz"))
    with pytest.raises(DataError, match=r"subject-4_seg\.nii\.gz: exists and was not written by a prediction"):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(out)])
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"a_file: is a file, not a folder"):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(a_file)])
    assert work == []  # refused before any volume was read or segmented
    # An earlier prediction of ours: refused without overwrite, as predict.py refuses it.
    monkeypatch.undo()
    predict(checkpoint, [tiny_demo_dir / "subject-4-T1.hdr", tiny_demo_dir / "subject-4-T2.hdr"], tmp_path / "ours")
    with pytest.raises(DataError, match=r"subject-4_seg\.nii\.gz: exists \(an earlier prediction\)"):
        run_with(checkpoint, tiny_demo_dir, "predict", ["--prediction_writer.output_dir", str(tmp_path / "ours")])
