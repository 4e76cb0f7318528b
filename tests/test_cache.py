import os
from pathlib import Path

import numpy as np
import pytest

from core.io import DataError
from core.labels import LabelSpace
from core.volumes import PreprocessingSettings, Subject, load_subject
from datamodules.cache import VolumeCache, cache_key

from conftest import write_iseg_subject

LABELS = LabelSpace.from_values({0: "background", 10: "CSF", 150: "GM", 250: "WM"})


@pytest.fixture
def subject(tmp_path: Path) -> Subject:
    folder = tmp_path / "iSeg-2017-Training"
    write_iseg_subject(folder, 1)
    return Subject("subject-1", (folder / "subject-1-T1.hdr", folder / "subject-1-T2.hdr"),
                   folder / "subject-1-label.hdr")


def test_cached_volume_is_memory_mapped_and_equal_to_a_fresh_load(subject: Subject, tmp_path: Path) -> None:
    cache = VolumeCache(tmp_path / "cache")
    settings = PreprocessingSettings()
    first = cache.load(subject, LABELS, settings)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("subject-1-")
    assert sorted(p.name for p in entries[0].iterdir()) == ["image.npy", "label.npy", "meta.json"]
    again = cache.load(subject, LABELS, settings)
    assert isinstance(again.image, np.memmap) and isinstance(again.label, np.memmap)
    fresh = load_subject(subject, LABELS, settings)
    np.testing.assert_array_equal(again.image, fresh.image)
    np.testing.assert_array_equal(again.label, fresh.label)
    np.testing.assert_array_equal(first.affine, fresh.affine)
    assert again.original_shape == fresh.original_shape == (16, 20, 24)


def test_key_changes_with_sources_settings_and_label_space(subject: Subject) -> None:
    settings = PreprocessingSettings()
    key = cache_key(subject, LABELS, settings)
    assert key == cache_key(subject, LABELS, PreprocessingSettings())
    assert key != cache_key(subject, LABELS, PreprocessingSettings(clip_percentiles=(0.5, 99.5)))
    assert key != cache_key(subject, None, settings)
    assert key != cache_key(subject, LabelSpace.from_values({0: "bg", 10: "a", 150: "b", 250: "c"}), settings)
    data = subject.images[1].with_suffix(".img")  # the data half of an Analyze pair: rewritten scan
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert key != cache_key(subject, LABELS, settings)


def test_no_cache_dir_keeps_volumes_in_memory(subject: Subject) -> None:
    volume = VolumeCache(None).load(subject, LABELS, PreprocessingSettings())
    assert not isinstance(volume.image, np.memmap) and volume.image.shape == (2, 16, 20, 24)


def test_fill_preprocesses_in_parallel_processes_and_reports_errors(tmp_path: Path) -> None:
    folder = tmp_path / "iSeg-2017-Training"
    subjects = []
    for n in (1, 2, 3):
        write_iseg_subject(folder, n)
        subjects.append(Subject(f"subject-{n}", (folder / f"subject-{n}-T1.hdr", folder / f"subject-{n}-T2.hdr"),
                                folder / f"subject-{n}-label.hdr"))
    cache = VolumeCache(tmp_path / "cache")
    settings = PreprocessingSettings()
    assert cache.fill(subjects[:2], LABELS, settings, workers=2) == 2
    assert cache.fill(subjects, LABELS, settings, workers=2) == 1  # only the new one
    for subject in subjects:
        cached = cache.load(subject, LABELS, settings)
        assert isinstance(cached.image, np.memmap)
        np.testing.assert_array_equal(cached.label, load_subject(subject, LABELS, settings).label)
    broken = tmp_path / "broken"
    write_iseg_subject(broken, 4)
    write_iseg_subject(broken, 5)
    (broken / "subject-5-T2.img").write_bytes(b"\x00" * 10)  # truncated
    bad = [Subject(f"subject-{n}", (broken / f"subject-{n}-T1.hdr", broken / f"subject-{n}-T2.hdr"),
                   broken / f"subject-{n}-label.hdr") for n in (4, 5)]
    with pytest.raises(DataError, match=r"subject-5-T2\.hdr: cannot read the image"):
        cache.fill(bad, LABELS, settings, workers=2)


def test_cache_entries_get_the_umask_mode_and_a_full_disk_is_one_line(subject: Subject, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry folder is an output like any other (not mkdtemp's private 0700); a cache that
    cannot be written is an error naming the entry and the option, leaving no partial entry."""
    cache = VolumeCache(tmp_path / "cache")
    cache.load(subject, LABELS, PreprocessingSettings())
    (entry,) = (tmp_path / "cache").iterdir()
    umask = os.umask(0)
    os.umask(umask)
    assert entry.stat().st_mode & 0o777 == 0o777 & ~umask
    full = VolumeCache(tmp_path / "full")

    def disk_full(path: object, array: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(DataError, match=r"full/subject-1-\w+: cannot write the cache entry \(No space left on "
                                        r"device\); free space or choose another --data\.init_args\.cache_dir"):
        full.load(subject, LABELS, PreprocessingSettings())
    assert list((tmp_path / "full").iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_every_bad_subject_is_said_at_once_and_the_good_ones_are_cached(tmp_path: Path, workers: int) -> None:
    """A dataset with three bad subjects among six (a T2 of another shape, a label value outside the
    map, an all-zero T1) used to stop at the first, one run per problem: now one error
    names all three, in the dataset's order, after the other three were preprocessed and cached
    (in one process, or in a pool of two). Without a cache, loading says them together too."""
    from datamodules import ISeg2017DataModule

    from conftest import write_analyze

    folder = tmp_path / "iSeg-2017-Training"
    for n in range(1, 7):
        write_iseg_subject(folder, n)
    write_analyze(np.zeros((16, 20, 20), np.int16), folder / "subject-2-T2.hdr")
    label = write_iseg_subject(folder, 4)["label"].copy()
    label[0, 0, 0] = 7
    write_analyze(label, folder / "subject-4-label.hdr")
    write_analyze(np.zeros((16, 20, 24), np.int16), folder / "subject-6-T1.hdr")  # all zero: nothing to normalise
    data = ISeg2017DataModule(str(folder), val_subjects=["subject-5"], test_subjects=["subject-6"],
                              cache_dir=str(tmp_path / "cache"), preprocess_workers=workers)
    with pytest.raises(DataError) as error:
        data.prepare_data()
    said = str(error.value)
    assert said.startswith("3 of 6 subjects cannot be used: ") and "\n" not in said, said
    places = [said.index(f"subject-{n}-") for n in (2, 4, 6)]
    assert places == sorted(places)  # in the dataset's order, whichever worker ended first
    assert "subject-2-T2.hdr: shape (16, 20, 20) differs from subject-2-T1.hdr" in said
    assert "subject-4-label.hdr: label values [7] are not in the label map" in said
    assert "subject-6-T1.hdr" in said
    cached = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert cached == ["1", "3", "5"]  # the usable subjects are preprocessed all the same
    memory = ISeg2017DataModule(str(folder), val_subjects=["subject-5"], test_subjects=["subject-6"], cache_dir=None)
    with pytest.raises(DataError, match=r"^2 of 4 subjects cannot be used: .*subject-2-T2\.hdr: shape .*; "
                                        r".*subject-4-label\.hdr: label values \[7\]"):
        memory.setup("fit")
