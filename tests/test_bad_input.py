"""The bad-input matrix: every NIfTI layout, every defect, one clear error naming the file."""

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import write_brats, write_mrbrains18, write_nifti_folder

from core.labels import IGNORE_INDEX
from datamodules import BraTSDataModule, DataError, MRBrainS18DataModule, NiftiDataModule, VolumeSegmentationDataModule

SMALL = {"patch_size": (8, 8, 8), "batch_size": 2, "samples_per_volume": 2, "cache_dir": None}


@dataclass
class Layout:
    make: Callable[[Path], VolumeSegmentationDataModule]
    folder: Path
    subject: str  # the validation subject, whose files get damaged
    image: Path  # its first modality
    other: Path  # its second modality
    label: Path


def mrbrains(root: Path) -> Layout:
    folder = write_mrbrains18(root)
    s = folder / "148"
    return Layout(lambda d: MRBrainS18DataModule(str(d), val_subjects=["148"], **SMALL), folder, "148",
                  s / "pre/reg_T1.nii.gz", s / "pre/reg_IR.nii.gz", s / "segm.nii.gz")


def brats(root: Path) -> Layout:
    folder = write_brats(root, 2020)
    case = "BraTS20_Training_003"
    s = folder / case
    return Layout(lambda d: BraTSDataModule(str(d), val_subjects=[case], **SMALL), folder, case,
                  s / f"{case}_t1.nii.gz", s / f"{case}_t1ce.nii.gz", s / f"{case}_seg.nii.gz")


def nifti(root: Path) -> Layout:
    folder = write_nifti_folder(root / "data")
    s = folder / "sub-02"
    return Layout(lambda d: NiftiDataModule(str(d), modalities=["T1", "FLAIR"],
                                            labels={0: "background", 1: "tissue", 2: "lesion"},
                                            val_subjects=["sub-02"], **SMALL),
                  folder, "sub-02", s / "T1.nii.gz", s / "FLAIR.nii.gz", s / "label.nii.gz")


LAYOUTS = {"mrbrains18": mrbrains, "brats2020": brats, "nifti": nifti}


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    return LAYOUTS[request.param](tmp_path)


def rewrite(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(array, image.affine if affine is None else affine), str(path))


def load_validation(layout: Layout) -> None:
    layout.make(layout.folder).setup("validate")


def expect(layout: Layout, path: Path, message: str) -> None:
    with pytest.raises(DataError) as error:
        load_validation(layout)
    text = str(error.value)
    assert str(path) in text or path.name in text, text
    assert message in text, text


def test_the_layout_loads_cleanly(layout: Layout) -> None:
    """The undamaged layout: its validation subject read, every channel z-scored over the brain,
    labels within the label space's classes."""
    datamodule = layout.make(layout.folder)
    datamodule.setup("validate")
    (volume,) = datamodule.val_set.volumes
    assert volume.subject_id == layout.subject and volume.image.shape[0] == len(datamodule.modalities) >= 2
    for channel in volume.image:
        brain = channel[channel != 0]
        assert abs(float(brain.mean())) < 1e-3 and abs(float(brain.std()) - 1) < 1e-2
    assert set(np.unique(volume.label).tolist()) <= {*range(datamodule.label_space.num_classes), IGNORE_INDEX}


def test_missing_modality(layout: Layout) -> None:
    layout.other.unlink()
    with pytest.raises(DataError, match=layout.other.name.replace(".", r"\.")) as error:
        layout.make(layout.folder).subjects()
    assert layout.subject in str(error.value)


def test_files_a_datalad_dataset_has_not_fetched(layout: Layout, tmp_path: Path) -> None:
    """A DataLad or git-annex dataset not fully fetched lists its images as symbolic links to
    content that is not there: said as that (not "file not found" beside a file ``ls`` shows)
    when the subjects are listed, before any volume is read."""
    target = tmp_path / ".git" / "annex" / "objects" / layout.other.name
    layout.other.unlink()
    layout.other.symlink_to(target)
    with pytest.raises(DataError) as error:
        layout.make(layout.folder).subjects()
    assert str(error.value).startswith(f"{layout.other}: a symbolic link to {target}, which is not here (a DataLad "
                                       "or git-annex file whose content was not fetched? `datalad get` or `git "
                                       "annex get` it)"), str(error.value)


def test_every_unreadable_input_is_counted_in_one_error(tmp_path: Path) -> None:
    from core.io import check_present

    files = [tmp_path / f"sub-{n:02d}_T1w.nii.gz" for n in range(1, 9)]
    for path in files[:2]:
        path.write_bytes(b"\0")
    (tmp_path / "folder.nii.gz").mkdir()
    check_present(files[:2])  # readable: nothing said
    with pytest.raises(DataError) as error:
        check_present([*files, tmp_path / "folder.nii.gz"])
    text = str(error.value)
    assert text.startswith(f"7 input files cannot be read: {files[2]}: file not found; {files[3]}: file not found")
    assert text.endswith("; and 2 more") and text.count("file not found") == 5 and "folder.nii.gz" not in text
    with pytest.raises(DataError, match=r"folder\.nii\.gz: a folder, not a file$"):
        check_present([tmp_path / "folder.nii.gz"])


def test_modality_shapes_differ(layout: Layout) -> None:
    data = np.asarray(nib.load(str(layout.other)).dataobj)
    rewrite(layout.other, data[:-1])
    expect(layout, layout.other, f"differs from {layout.image.name}")
    expect(layout, layout.other, "(resample_to_first: true resamples it onto the first modality's grid through "
                                 "the affines)")  # what to do about it


def test_modality_affines_differ(layout: Layout) -> None:
    image = nib.load(str(layout.other))
    shifted = image.affine.copy()
    shifted[:3, 3] += 2.5
    rewrite(layout.other, np.asarray(image.dataobj), shifted)
    expect(layout, layout.other, "affine differs")
    expect(layout, layout.other, f"affine differs from {layout.image.name}'s: the same voxel lies up to 2.5 mm apart, "
                                 "more than affine_tolerance 0.001 mm (resample_to_first: true resamples it")
    with pytest.raises(DataError) as error:
        load_validation(layout)
    assert "\n" not in str(error.value)  # one line, not two matrices


def test_label_grid_differs(layout: Layout) -> None:
    data = np.asarray(nib.load(str(layout.label)).dataobj)
    rewrite(layout.label, data[:, :-2])
    expect(layout, layout.label, "shape")


def test_label_values_outside_the_map(layout: Layout) -> None:
    data = np.asarray(nib.load(str(layout.label)).dataobj).copy()
    data[1, 1, 1] = 37
    rewrite(layout.label, data)
    expect(layout, layout.label, "label values [37] are not in the label map")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_voxels(layout: Layout, bad: float) -> None:
    data = np.asarray(nib.load(str(layout.image)).dataobj).astype(np.float32)
    data[2, 3, 4] = bad
    data[3, 3, 4] = -bad
    rewrite(layout.image, data)
    expect(layout, layout.image, "2 voxels are NaN or infinite")


def test_all_zero_image(layout: Layout) -> None:
    data = np.asarray(nib.load(str(layout.other)).dataobj)
    rewrite(layout.other, np.zeros_like(data))
    expect(layout, layout.other, "every voxel is zero")


def test_4d_file_where_3d_is_expected(layout: Layout) -> None:
    data = np.asarray(nib.load(str(layout.image)).dataobj)
    rewrite(layout.image, np.stack([data, data], axis=-1))
    expect(layout, layout.image, "expected a 3D volume, got shape")


def test_trailing_singleton_axes_are_a_3d_volume(tmp_path: Path) -> None:
    """(x, y, z, 1) and (x, y, z, 1, 1), as some converters store a 3D scan, read as the volume."""
    from core.io import load_volume

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    for shape in ((3, 4, 5, 1), (3, 4, 5, 1, 1)):
        nib.save(nib.Nifti1Image(data.reshape(shape), np.eye(4)), str(tmp_path / "scan.nii.gz"))
        assert nib.load(str(tmp_path / "scan.nii.gz")).shape == shape
        np.testing.assert_array_equal(load_volume(tmp_path / "scan.nii.gz")[0], data)


def test_truncated_gzip(layout: Layout) -> None:
    content = layout.image.read_bytes()
    assert content[:2] == b"\x1f\x8b"  # really gzip-compressed, as shipped
    layout.image.write_bytes(content[: len(content) // 2])
    expect(layout, layout.image, "cannot read the image")


def test_corrupt_header(layout: Layout) -> None:
    layout.image.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    expect(layout, layout.image, "cannot read the image")


def test_empty_and_wrong_folders(layout: Layout, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .*found"):
        layout.make(empty).subjects()
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        layout.make(tmp_path / "nowhere").subjects()


def test_header_claiming_more_voxels_than_the_file_holds(layout: Layout) -> None:
    """A corrupt header (4000^3 voxels) is refused before anything is allocated (once: a bare
    MemoryError). The lie is written into the gzip-compressed header of the validation image."""
    raw = bytearray(gzip.decompress(layout.image.read_bytes()))
    raw[40:56] = np.array([3, 4000, 4000, 4000, 1, 1, 1, 1], dtype="<i2").tobytes()  # dim[0..7]
    layout.image.write_bytes(gzip.compress(bytes(raw)))
    expect(layout, layout.image, "the header claims 4000x4000x4000 voxels")


def test_uncompressed_file_shorter_than_its_header_says(tmp_path: Path) -> None:
    from core.io import load_volume

    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.int16), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[:-100])  # truncated by 100 bytes: 50 voxels missing
    with pytest.raises(DataError, match=r"scan\.nii: cannot read the image: the header claims 10x10x10 voxels"):
        load_volume(path)


def test_an_mgz_header_claiming_more_voxels_than_it_can_hold_is_refused(tmp_path: Path) -> None:
    """FreeSurfer's ``.mgz`` is gzipped: read by deflate's ratio (a whole one loads), and a header
    claiming 4000^3 voxels is refused before anything is allocated."""
    from core.io import load_volume

    path = tmp_path / "T1.mgz"
    data = np.zeros((30, 30, 30), np.float32)  # compresses about 1000:1
    data[10:20, 10:20, 10:20] = 1.0
    nib.save(nib.MGHImage(data, np.diag([-1.0, 1.0, 1.0, 1.0])), str(path))
    loaded, affine = load_volume(path)
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_allclose(affine, nib.load(str(path)).affine)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[4:16] = np.array([4000, 4000, 4000], dtype=">i4").tobytes()  # MGH: version, then width, height, depth
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"T1\.mgz: cannot read the image: the header claims 4000x4000x4000 voxels"):
        load_volume(path)


def test_dicom_given_for_images_says_to_convert_it(tmp_path: Path) -> None:
    """A scanner's DICOM export (Part 10 files, ``DICM`` after the preamble, named without a
    suffix as many scanners write them) given as an image, or as a dataset folder, is said as
    DICOM with the converters to use, not as an unknown file type or an empty folder."""
    from core.io import load_volume
    from datamodules import ISeg2017DataModule

    series = tmp_path / "export" / "DICOM" / "S0001"
    series.mkdir(parents=True)
    for n in range(3):
        (series / f"IM{n:04d}").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(64))
    with pytest.raises(DataError, match=r"IM0000: is a DICOM file, not one of the formats read here \(NIfTI, Analyze, "
                                        r"MGH, NRRD, MetaImage\): convert each series to NIfTI first \(dcm2niix"):
        load_volume(series / "IM0000")
    with pytest.raises(DataError, match=r"export: no iSeg subjects found .*; it holds DICOM files "
                                        r"\(DICOM/S0001/IM000\d, \.\.\.\): convert each series to NIfTI first"):
        ISeg2017DataModule(str(tmp_path / "export"), cache_dir=None).subjects()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no iSeg subjects found \(expected files like "
                                        r"subject-1-T1\.hdr/\.img\)$"):
        ISeg2017DataModule(str(tmp_path / "empty"), cache_dir=None).subjects()
    # The folder above the dataset's (an archive's top folder): the subfolder that holds it is named.
    from conftest import write_iseg_subject

    for n in (1, 2):
        write_iseg_subject(tmp_path / "iSeg-2017" / "iSeg-2017-Training", n)
    (tmp_path / "iSeg-2017" / "iSeg-2017-Testing").mkdir()
    with pytest.raises(DataError, match=r"iSeg-2017: no iSeg subjects found \(.*\); .*iSeg-2017/iSeg-2017-Training "
                                        r"holds 2 subjects of this layout: give that folder$"):
        ISeg2017DataModule(str(tmp_path / "iSeg-2017"), cache_dir=None).subjects()
    # A dataset whose own problem is another (a subject without its T2) beside DICOM sources: that problem alone.
    write_iseg_subject(tmp_path / "export", 1)
    (tmp_path / "export" / "subject-1-T2.img").unlink()
    with pytest.raises(DataError, match=r"subject-1-T2\.img: file not found[^;]*$"):
        ISeg2017DataModule(str(tmp_path / "export"), cache_dir=None).subjects()


def test_huge_intensities_are_normalised_not_lost(layout: Layout) -> None:
    """A float image scaled by 3e34 once overflowed the z-score (float32) into an all-background
    volume; statistics in float64 give the same normalised image as the unscaled one."""
    reference = layout.make(layout.folder)
    reference.setup("validate")
    expected = reference.val_set[0]["image"][0].numpy()
    data = np.asarray(nib.load(str(layout.image)).dataobj).astype(np.float32) * np.float32(3e34)
    rewrite(layout.image, data)
    scaled = layout.make(layout.folder)
    scaled.setup("validate")
    np.testing.assert_allclose(scaled.val_set[0]["image"][0].numpy(), expected, atol=1e-5)


def test_intensities_wrapped_by_an_integer_type_are_flagged(tmp_path: Path) -> None:
    """Values past 127 saved as int8 wrap to negative numbers; a file whose stored integers reach
    both ends of its type gets a warning naming it. An ordinary int8 or int16 scan gets none."""
    import warnings

    from core.io import load_volume

    true = np.linspace(0, 250, 1000, dtype=np.float32).reshape(10, 10, 10)  # needs uint8, not int8
    wrapped = tmp_path / "wrapped.nii.gz"
    nib.save(nib.Nifti1Image(true.astype(np.int16).astype(np.int8), np.eye(4)), str(wrapped))
    with pytest.warns(UserWarning, match=r"wrapped\.nii\.gz: stored int8 values reach both -128 and 127"):
        load_volume(wrapped)
    fine = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image((true / 2).astype(np.int8), np.eye(4)), str(fine))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_volume(fine)
