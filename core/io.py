"""Reading images and label maps with errors that name the file and the problem; writing every
output atomically (temporary file in the destination folder, fsync, rename)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np


class DataError(ValueError):
    """Raised for bad input data; the message names the file and what is wrong with it."""


class OutputError(DataError, OSError):
    """An output that cannot be written (no permission, a full disk, a file where a folder must
    be): one line naming the path and the cause, like bad input; an ``OSError`` too (``errno``)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class DataWarning(UserWarning):
    """Input that is probably wrong but cannot be proven so (wrapped intensities, modalities that
    look swapped); the message names the file. The entry points print it as one line."""


def one_line_warnings(program: str) -> None:
    """Print :class:`DataWarning` as ``<program>: warning: <message>`` (no source line; other
    warnings as Python formats them)."""
    default = warnings.formatwarning

    def format_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
        if issubclass(category, DataWarning):
            return f"{program}: warning: {message}\n"
        return default(message, category, *args, **kwargs)

    warnings.formatwarning = format_warning  # type: ignore[assignment]


def unreadable(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or None when it can: not there, a symbolic
    link whose target is not there (a DataLad or git-annex file whose content was never fetched:
    it is listed, but holds nothing), a folder, or no read permission."""
    path = Path(path)
    if path.is_file():
        return None if os.access(path, os.R_OK) else "not readable (permission denied)"
    if path.is_symlink():
        return (f"a symbolic link to {os.readlink(path)}, which is not here (a DataLad or git-annex file whose "
                "content was not fetched? `datalad get` or `git annex get` it)")
    if path.is_dir():
        return "a folder, not a file"
    return "file not found"


def require_file(path: str | Path, context: str = "") -> None:
    """Refuse an input file that cannot be read, naming it, the reason and ``context`` (which
    subject lacks it)."""
    if (reason := unreadable(path)) is not None:
        raise DataError(f"{path}: {reason}" + (f" ({context})" if context else ""))


def check_present(files: Iterable[str | Path], shown: int = 5) -> None:
    """Refuse, before any work, input files that cannot be read: one error naming the first
    ``shown`` of them, each with its reason, and how many there are in all."""
    problems = [DataError(f"{f}: {reason}") for f in dict.fromkeys(files) if (reason := unreadable(f)) is not None]
    raise_together(problems, "input files cannot be read", shown)


def raise_together(errors: Sequence[ValueError], summary: str, shown: int = 5) -> None:
    """One error for several problems of bad input, each naming its file: one is raised as it is;
    several as one line of the first one's type, ``<count> <summary>: `` then the first ``shown``
    and how many more, so that a dataset's problems are all known after one run, not one per run."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        listed = "; ".join(str(e) for e in errors[:shown])
        more = f"; and {len(errors) - shown} more" if len(errors) > shown else ""
        raise type(errors[0])(f"{len(errors)} {summary}: {listed}{more}")


T = TypeVar("T")


class BadInputs:
    """The bad input met while going through ``total`` items (subjects, pairs), said together at
    the end (:meth:`raise_any`): an item's ``kind`` of error is kept, in the items' order, and the
    work goes on with the next; an :class:`OutputError` (an output that cannot be written) stops
    at once, since going on could not help."""

    def __init__(self, total: int, what: str = "subjects", kind: type[ValueError] = DataError) -> None:
        self.total, self.what, self.kind = total, what, kind
        self.errors: dict[int, ValueError] = {}
        self._attempts = 0

    def attempt(self, work: Callable[[], T], place: int | None = None) -> T | None:
        """``work()``, or None when it met bad input (kept, at ``place`` among the items: by
        default the order of the attempts)."""
        place = self._attempts if place is None else place
        self._attempts += 1
        try:
            return work()
        except OutputError:
            raise
        except self.kind as error:
            self.errors[place] = error
            return None

    def raise_any(self) -> None:
        raise_together([self.errors[i] for i in sorted(self.errors)], f"of {self.total} {self.what} cannot be used")


ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # read by SimpleITK (nnU-Net datasets use them too)
# Read by nibabel: NIfTI, Analyze, and FreeSurfer's MGH (``.mgz`` is gzipped MGH: T1.mgz, aseg.mgz).
NIBABEL_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img", ".mgz", ".mgh")
IMAGE_SUFFIXES = (*NIBABEL_SUFFIXES, *ITK_SUFFIXES)
_GZIPPED_SUFFIXES = (".gz", ".mgz")


DICOM_REMEDY = "convert each series to NIfTI first (dcm2niix; for a BIDS dataset, dcm2bids or heudiconv)"


def is_dicom(path: str | Path) -> bool:
    """A DICOM file: ``DICM`` after the 128-byte preamble (DICOM Part 10), or named ``.dcm``/``.ima``."""
    if Path(path).suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_hint(folder: str | Path, limit: int = 200) -> str | None:
    """What to do about a folder of DICOM series given where images are expected (its first
    ``limit`` files looked at), or None when it holds none."""
    folder = Path(folder)
    files = (p for p in folder.rglob("*") if p.is_file())
    for _, path in zip(range(limit), files, strict=False):
        if is_dicom(path):
            return f"it holds DICOM files ({path.relative_to(folder)}, ...): {DICOM_REMEDY}"
    return None


def image_stem(path: str | Path) -> str:
    """A file's name without its image format's suffix (``subject-4-T1`` of ``subject-4-T1.hdr``,
    ``T1`` of ``T1.mgz``); other names are returned whole."""
    name = Path(path).name
    suffix = next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)]


def is_itk_file(path: str | Path) -> bool:
    """Whether ``path`` is in a format nibabel does not read but SimpleITK does."""
    return Path(path).name.lower().endswith(ITK_SUFFIXES)


def _load_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 3D NRRD/MetaImage file as ``(float32 array in x, y, z order, RAS+ affine)``: ITK's
    LPS origin and direction cosines turned into the affine NIfTI readers give."""
    try:
        import SimpleITK as sitk
    except ImportError as error:
        raise DataError(f"{path}: reading {path.suffix} files needs SimpleITK, which is not installed here: "
                        "pip install SimpleITK") from error
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read the image ({reason})") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a 3D single-component image, got {image.GetDimension()}D with "
                        f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return data, affine


def without_singleton_axes(data: np.ndarray) -> np.ndarray:
    """``data`` without trailing singleton axes beyond the third: (x, y, z, 1) and (x, y, z, 1, 1),
    as some converters store a 3D volume, are (x, y, z)."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def load_volume(path: Path, channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D image (NIfTI, Analyze, FreeSurfer's MGH/MGZ; NRRD and MetaImage through SimpleITK) as
    ``(float32 array, 4x4 affine)``.

    ``channel`` picks one volume of a 4D file (the Decathlon stores modalities on the 4th
    axis). Without it, trailing singleton axes (4th, 5th) are dropped and anything else that is not
    3D is an error, as are unreadable or truncated files and NaN or infinite voxels.
    """
    path = Path(path)
    require_file(path)
    if is_itk_file(path):
        data, affine = _load_itk(path)
        check_finite(path, data)
        return data, affine
    try:
        image = nib.load(str(path))
        check_size(path, image)
        if channel is not None and len(image.shape) == 4:
            if not 0 <= channel < image.shape[3]:
                raise DataError(f"{path}: has {image.shape[3]} volumes on its 4th axis, asked for volume {channel}")
            data = np.asarray(image.dataobj[..., channel], dtype=np.float32)
        else:
            data = np.asarray(image.dataobj, dtype=np.float32)
    except DataError:
        raise
    except Exception as error:  # nibabel and zlib raise many types for corrupt or truncated files
        if is_dicom(path):
            raise DataError(f"{path}: is a DICOM file, not one of the formats read here (NIfTI, Analyze, MGH, "
                            f"NRRD, MetaImage): {DICOM_REMEDY}") from error
        raise DataError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from error
    data = without_singleton_axes(data)
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    check_finite(path, data)
    warn_if_wrapped(path, data, image.get_data_dtype(), image.dataobj)
    return data, np.asarray(image.affine, dtype=np.float64)


def check_finite(path: Path, data: np.ndarray) -> None:
    """Refuse NaN or infinite voxels, counted, naming the file."""
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {bad} voxels are NaN or infinite")


def warn_if_wrapped(path: Path, data: np.ndarray, dtype: np.dtype, dataobj: object) -> None:
    """Warn when stored integers reach both ends of their type (e.g. -128 and 127 in an int8 file):
    the sign of intensities that overflowed on saving, which no scan has on purpose."""
    dtype = np.dtype(dtype)
    slope = getattr(dataobj, "slope", 1.0)
    if dtype.kind != "i" or not np.isfinite(slope) or slope == 0:
        return
    info = np.iinfo(dtype)
    inter = getattr(dataobj, "inter", 0.0)
    low, high = sorted(((float(data.min()) - inter) / slope, (float(data.max()) - inter) / slope))
    if low <= info.min + 1 and high >= info.max - 1:
        warnings.warn(f"{path}: stored {dtype} values reach both {info.min} and {info.max}; intensities that "
                      f"overflowed {dtype} when the file was written (wrapped around) are likely", DataWarning,
                      stacklevel=2)


GZIP_MAX_RATIO = 1032  # deflate cannot expand data by more than about 1032:1


def check_size(path: Path, image: nib.spatialimages.SpatialImage) -> None:
    """Refuse, before anything is allocated, a header whose shape x data type cannot fit in the
    file (a corrupt header claiming 4000^3 voxels would otherwise end in a bare MemoryError):
    exactly for uncompressed files, by deflate's largest expansion ratio for gzipped ones (``.gz``,
    FreeSurfer's ``.mgz``)."""
    header = image.header
    needed = int(np.prod(image.shape, dtype=np.float64)) * np.dtype(header.get_data_dtype()).itemsize
    data_file = Path(image.file_map["image"].filename or path)
    if not data_file.is_file():
        return
    size = data_file.stat().st_size
    offset = int(getattr(image.dataobj, "offset", 0))  # where the voxels start in the data file
    compressed = data_file.suffix.lower() in _GZIPPED_SUFFIXES
    if (compressed and needed > GZIP_MAX_RATIO * size) or (not compressed and needed > size - offset):
        shape = "x".join(str(n) for n in image.shape)
        raise DataError(f"{path}: cannot read the image: the header claims {shape} voxels of {header.get_data_dtype()} "
                        f"({needed / 2**20:.0f} MiB), more than {data_file.name} ({size / 2**20:.1f} MiB) can hold; "
                        "the header or the file is corrupt")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import (reading it means setting it for a moment, which threads would see).
_UMASK = _read_umask()


def umask_mode(folder: bool = False) -> int:
    """The permissions the umask gives a new file (0644 typically) or folder (0755): for
    outputs made under a temporary name (``mkstemp``/``mkdtemp`` make them private) and renamed."""
    return (0o777 if folder else 0o666) & ~_UMASK


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; on success it is flushed to disk and
    renamed onto ``path`` with the permissions the umask gives a new file (0644 typically);
    on failure it is removed and the error names ``path``. Never a half-written result."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:])  # keeps ".nii.gz", so nibabel picks the format from the name
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(handle)
        yield Path(tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        if isinstance(error, OutputError):
            raise
        free = _free_bytes(path)
        raise OutputError(f"{path}: cannot write ({_reason(error, free)}"
                          f"{'' if free is None else f'; {free / 2**20:.1f} MiB free there'})",
                          getattr(error, "errno", None)) from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _reason(error: BaseException, free: int | None) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if free is not None and free < 2**20:  # torch.save reports a full disk as a zip-writer RuntimeError
        return "No space left on device"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest existing parent: where a file or folder that is
    made later would go, to ask for permissions and free space now."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    """Free bytes where ``path`` would be written, if it can be asked."""
    try:
        return shutil.disk_usage(nearest_existing(path.parent)).free
    except OSError:
        return None


def save_nifti_atomically(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Write a NIfTI image through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def unused_path(path: str | Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3``... if it exists: for records a command adds
    beside others' (run configs), which must never replace an earlier one."""
    path = Path(path)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read once per process while its size and time stay the same
    (a checkpoint of hundreds of MB is named by it in every log line and image of a run)."""
    stat = Path(path).resolve().stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and time: a file written again is read again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def earlier_report(folder: str | Path, tables: Sequence[str], record_name: str) -> tuple[list[str], Any]:
    """Which of a report's ``tables`` a folder holds already, and the record written beside them
    (``record_name``, JSON: what they score; None when absent or unreadable). A report replaces
    an earlier one only when the records are equal (the same evaluation again) or when asked:
    test reports, evaluate.py's scores and compare_runs.py's comparisons alike."""
    folder = Path(folder)
    present = [name for name in tables if (folder / name).exists()]
    if not present:
        return [], None
    try:
        record = json.loads((folder / record_name).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    return present, record


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a text file (CSV, Markdown, JSON) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
