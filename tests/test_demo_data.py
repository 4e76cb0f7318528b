from pathlib import Path

import nibabel as nib
import numpy as np

from demo.synthetic_iseg import SynthesisSettings, build_dataset


def test_demo_data_is_in_the_iseg_layout_with_realistic_contrast(tiny_demo_dir: Path) -> None:
    for n in range(1, 5):
        for part in ("T1", "T2", "label"):
            assert (tiny_demo_dir / f"subject-{n}-{part}.hdr").is_file()
            assert (tiny_demo_dir / f"subject-{n}-{part}.img").is_file()
    t1 = nib.load(str(tiny_demo_dir / "subject-1-T1.hdr"))
    label = np.asarray(nib.load(str(tiny_demo_dir / "subject-1-label.hdr")).dataobj)
    assert t1.get_data_dtype() == np.int16 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 10, 150, 250}
    t1 = np.asarray(t1.dataobj, dtype=float)
    t2 = np.asarray(nib.load(str(tiny_demo_dir / "subject-1-T2.hdr")).dataobj, dtype=float)
    means = {v: (t1[label == v].mean(), t2[label == v].mean()) for v in (10, 150, 250)}
    assert means[10][0] < means[150][0] < means[250][0]   # T1w: CSF dark, WM bright
    assert means[10][1] > means[150][1] > means[250][1]   # T2w: CSF bright, WM dark
    assert (t1[label == 0] == 0).all()                      # skull-stripped background


def test_demo_data_is_deterministic_and_cached(tmp_path: Path, tiny_demo_dir: Path) -> None:
    settings = SynthesisSettings(subjects=4, seed=3, spacing=6.0)
    again = build_dataset(tmp_path / "again", settings)
    for name in ("subject-2-T1.img", "subject-2-label.img"):
        assert (again / name).read_bytes() == (tiny_demo_dir / name).read_bytes()
    stamp = (again / "subject-1-T1.img").stat().st_mtime_ns
    build_dataset(again, settings)  # same settings: reused, not rewritten
    assert (again / "subject-1-T1.img").stat().st_mtime_ns == stamp
    other = build_dataset(tmp_path / "other", SynthesisSettings(subjects=2, seed=4, spacing=6.0))  # subject-2 is enough
    assert (other / "subject-2-T1.img").read_bytes() != (again / "subject-2-T1.img").read_bytes()


def test_demo_data_replaces_only_a_demo_dataset(tmp_path: Path, tiny_demo_dir: Path) -> None:
    """Another demo dataset in ``--out`` is rebuilt; anything else there is refused untouched: a
    real iSeg-2017 folder (the same file names, no synthesis.json), a folder with other files, a
    file. (It used to be deleted whole, whatever it was.)"""
    import shutil

    import pytest

    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo_dir, demo)
    one = SynthesisSettings(subjects=1, seed=5, spacing=6.0)
    build_dataset(demo, one)
    assert sorted(p.name for p in demo.iterdir()) == ["subject-1-T1.hdr", "subject-1-T1.img", "subject-1-T2.hdr",
                                                      "subject-1-T2.img", "subject-1-label.hdr",
                                                      "subject-1-label.img", "synthesis.json"]
    real = tmp_path / "iSeg-2017-Training"
    shutil.copytree(tiny_demo_dir, real, ignore=shutil.ignore_patterns("synthesis.json"))
    notes = tmp_path / "notes"
    shutil.copytree(tiny_demo_dir, notes)
    (notes / "README.txt").write_text("my notes")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for folder, said in ((real, "no synthesis.json"), (notes, "README.txt"), (afile, "not a folder")):
        before = sorted(folder.rglob("*")) if folder.is_dir() else [folder]
        with pytest.raises(SystemExit, match=f"{folder}: exists and is not a demo dataset of this script "
                                             rf"\({said}\); refusing to replace it"):
            build_dataset(folder, one)
        assert (sorted(folder.rglob("*")) if folder.is_dir() else [folder]) == before
    assert (real / "subject-4-T1.img").read_bytes() == (tiny_demo_dir / "subject-4-T1.img").read_bytes()


def test_the_real_size_bids_tree_reads_back_the_same_anatomy_in_either_orientation(tmp_path: Path) -> None:
    """``demo/real_bids.py`` (here at 4 mm): the ICBM T1 as BIDS participants, every second stored
    LAS; the BIDS DataModule reads both back on one RAS+ grid with the same tissue labels, from
    the derivative's dseg.tsv, and from FreeSurfer's aseg.mgz; fMRIPrep's brain masks keep the brain
    of either, and ``--unstripped``'s masks give back the stripped scans' voxels; a folder that is
    not empty is refused."""
    import pytest

    from datamodules import BIDSDataModule, FreeSurferDataModule
    from demo.real_bids import build

    root = build(tmp_path / "bids", participants=2, spacing=4.0, fmriprep=True, freesurfer=True)
    first, second = (nib.load(str(root / f"sub-0{n}" / "anat" / f"sub-0{n}_T1w.nii.gz")) for n in (1, 2))
    assert nib.aff2axcodes(first.affine) == ("R", "A", "S") and nib.aff2axcodes(second.affine) == ("L", "A", "S")
    assert first.shape == (40, 49, 43) and first.get_data_dtype() == np.int16
    data = BIDSDataModule(str(root), modalities=["T1w"], labels_dir="derivatives/manual", cache_dir=None,
                          val_subjects=["sub-02"])
    assert data.label_space.class_names == ("background", "CSF", "GM", "WM")
    volumes = data._load(list(data.subjects().values()))
    assert volumes[0].label.shape == volumes[1].label.shape == (40, 49, 43)
    np.testing.assert_array_equal(volumes[0].label, volumes[1].label)  # the flip undone
    assert set(np.unique(volumes[0].label).tolist()) == {0, 1, 2, 3}
    brain = volumes[0].label > 0
    t1 = volumes[0].image[0]
    means = [t1[volumes[0].label == c].mean() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # the real T1 contrast: CSF dark, WM bright
    assert (t1[~brain] == 0).all()
    # fMRIPrep's layout beside it: its tissue map, conformed to RAS, labels the LAS participant too.
    prep = BIDSDataModule(str(root), modalities=["T1w"], labels_dir="derivatives/fmriprep", cache_dir=None,
                          label_entities={"desc": None, "space": None}, labels={1: "GM", 2: "WM", 3: "CSF"},
                          val_subjects=["sub-02"])
    assert nib.aff2axcodes(nib.load(str(prep.subjects()["sub-02"].label)).affine) == ("R", "A", "S")
    theirs = prep._load(list(prep.subjects().values()))
    for ours, fmriprep in zip(volumes, theirs, strict=True):  # ours CSF 1, GM 2, WM 3; fMRIPrep's GM 1, WM 2, CSF 3
        np.testing.assert_array_equal(fmriprep.label, np.array([0, 3, 1, 2])[ours.label])
    # fMRIPrep's native-space brain mask (RAS) among its MNI copies, on the RAS and the LAS participant.
    masked = BIDSDataModule(str(root), modalities=["T1w"], labels_dir="derivatives/manual", cache_dir=None,
                            masks_dir="derivatives/fmriprep", val_subjects=["sub-02"])
    assert [s.brain_mask.name for s in masked.subjects().values()] == [f"sub-0{n}_desc-brain_mask.nii.gz"
                                                                       for n in (1, 2)]
    for volume in masked._load(list(masked.subjects().values())):
        image, inside = volume.image[0], volume.label > 0
        assert (image[~inside] == 0).all() and (image[inside] != 0).mean() > 0.99  # the LAS scan's mask not flipped
    aseg = BIDSDataModule(str(root), modalities=["T1w"], labels_dir="derivatives/fmriprep", cache_dir=None,
                          label_entities={"desc": "aseg"})
    assert aseg.label_space.class_names == ("background", "Left-Cerebral-White-Matter", "Left-Cerebral-Cortex",
                                            "Left-Lateral-Ventricle")
    # FreeSurfer's SUBJECTS_DIR beside it (conformed LIA MGZ, fsaverage among the subjects): the same tissues.
    freesurfer = FreeSurferDataModule(str(root / "derivatives" / "freesurfer"), cache_dir=None)
    assert list(freesurfer.subjects()) == ["sub-01", "sub-02"]
    assert nib.aff2axcodes(nib.load(str(freesurfer.subjects()["sub-02"].label)).affine) == ("L", "I", "A")
    for ours, fs in zip(volumes, freesurfer._load(list(freesurfer.subjects().values())), strict=True):
        np.testing.assert_array_equal(fs.label, ours.label)  # CSF 1, GM 2, WM 3 either way
    with pytest.raises(SystemExit, match="exists and is not empty"):
        build(root)
    # The same participants not skull-stripped, with their masks: the masked volumes are the stripped ones.
    raw = build(tmp_path / "raw", participants=2, spacing=4.0, unstripped=True)
    for n in (1, 2):
        scan = nib.load(str(raw / f"sub-0{n}" / "anat" / f"sub-0{n}_T1w.nii.gz"))
        assert (np.asarray(scan.dataobj) > 0).mean() > 0.9  # a head around the brain, noise in the air
    unmasked = BIDSDataModule(str(raw), modalities=["T1w"], labels_dir="derivatives/manual", cache_dir=None,
                              val_subjects=["sub-02"])
    masked = BIDSDataModule(str(raw), modalities=["T1w"], labels_dir="derivatives/manual", cache_dir=None,
                            masks_dir="derivatives/synthstrip", val_subjects=["sub-02"])
    for ours, theirs, stripped in zip(masked._load(list(masked.subjects().values())),
                                      unmasked._load(list(unmasked.subjects().values())), volumes, strict=True):
        np.testing.assert_array_equal(ours.image, stripped.image)
        assert not np.array_equal(theirs.image, stripped.image)
