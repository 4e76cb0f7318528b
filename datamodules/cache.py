"""A disk cache of preprocessed volumes, read back as memory-mapped arrays.

Preprocessing (resampling, N4) can take longer than an epoch; done once, its result is saved
as ``.npy`` files that DataLoader workers memory-map: patches are read from the page cache,
not re-decoded from ``.nii.gz``, and workers share one copy of each volume.

An entry's key hashes what determines its content: the source files (path, size,
modification time), the 4D channels used, the label map and the preprocessing settings.
Change any of them and a new entry is made; delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.io import BadInputs, OutputError, umask_mode
from core.labels import LabelSpace
from core.volumes import PreprocessingSettings, Subject, Volume, load_subject

CACHE_FORMAT = 1  # bump when the preprocessing code changes what it produces


def cache_key(subject: Subject, label_space: LabelSpace | None, settings: PreprocessingSettings) -> str:
    """A hash of everything that determines the preprocessed volume."""
    sources = []
    for path in subject.files():
        stat = Path(path).stat()
        sources.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    description = {
        "format": CACHE_FORMAT,
        "images": [str(Path(p).resolve()) for p in subject.images],
        "image_channels": subject.image_channels,
        "label": str(Path(subject.label).resolve()) if subject.label and label_space else None,
        "sources": sources,
        "label_space": label_space.to_dict() if label_space else None,
        "settings": settings.describe(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


class VolumeCache:
    """Preprocessed volumes by key under ``directory`` (None: no disk cache, always compute)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def entry(self, subject: Subject, label_space: LabelSpace | None, settings: PreprocessingSettings) -> Path | None:
        """The subject's cache folder (None without a cache, or when a source file is missing:
        loading then raises the clear error)."""
        if self.directory is None or not all(Path(p).is_file() for p in subject.files()):
            return None
        return self.directory / f"{subject.subject_id}-{cache_key(subject, label_space, settings)}"

    def load(self, subject: Subject, label_space: LabelSpace | None, settings: PreprocessingSettings) -> Volume:
        """The preprocessed volume: memory-mapped from the cache, or computed (and cached)."""
        entry = self.entry(subject, label_space, settings)
        if entry is None:
            return load_subject(subject, label_space, settings)
        if not (entry / "meta.json").is_file():
            self._write(entry, load_subject(subject, label_space, settings))
        return self._read(entry)

    def fill(self, subjects: Sequence[Subject], label_space: LabelSpace | None, settings: PreprocessingSettings,
             workers: int) -> int:
        """Preprocess and cache every subject not cached yet, ``workers`` at a time in separate
        processes (N4 on a large dataset takes hours on one core), with a progress bar in a
        terminal. Returns how many were made. Bad input does not stop the others: the subjects
        that can be used are cached, then the problems of all the others are raised together."""
        missing = [s for s in subjects
                   if (e := self.entry(s, label_space, settings)) is not None and not (e / "meta.json").is_file()]
        progress = tqdm(total=len(missing), desc="preprocessing", unit="subject", disable=None if missing else True)
        bad = BadInputs(len(missing))  # said in the dataset's order, whichever worker ended first
        with progress:
            if workers < 2 or len(missing) < 2:
                for subject in missing:
                    bad.attempt(lambda s=subject: self.load(s, label_space, settings))
                    progress.update()
            else:
                # Fork where there is fork (as DataLoader workers do): a spawned worker spends seconds
                # importing torch before its first subject.
                methods = multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
                with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
                    futures = {pool.submit(_cache_one, self.directory, s, label_space, settings): i
                               for i, s in enumerate(missing)}
                    for future in as_completed(futures):
                        bad.attempt(future.result, place=futures[future])  # a DataError comes back with its message
                        progress.update()
        bad.raise_any()
        return len(missing)

    @staticmethod
    def _write(entry: Path, volume: Volume) -> None:
        """Write into a temporary folder and rename it: readers never see half an entry, and
        two processes caching the same subject (DDP ranks) both end with a complete one."""
        tmp = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
            os.chmod(tmp, umask_mode(folder=True))  # mkdtemp makes it private; an entry is an output like any other
            np.save(tmp / "image.npy", volume.image)
            if volume.label is not None:
                np.save(tmp / "label.npy", volume.label)
            meta = {
                "subject_id": volume.subject_id,
                "affine": volume.affine.tolist(),
                "original_affine": volume.original_affine.tolist(),
                "original_shape": list(volume.original_shape),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / "meta.json").is_file():
                    raise
        except OSError as error:  # a full disk, a read-only cache folder
            raise OutputError(f"{entry}: cannot write the cache entry ({error.strerror or error}); free space "
                              "or choose another --data.init_args.cache_dir", error.errno) from error
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _read(entry: Path) -> Volume:
        meta = json.loads((entry / "meta.json").read_text())
        label_path = entry / "label.npy"
        return Volume(
            subject_id=meta["subject_id"],
            image=np.load(entry / "image.npy", mmap_mode="r"),
            label=np.load(label_path, mmap_mode="r") if label_path.is_file() else None,
            affine=np.asarray(meta["affine"], dtype=np.float64),
            original_affine=np.asarray(meta["original_affine"], dtype=np.float64),
            original_shape=tuple(meta["original_shape"]),
        )


def _cache_one(directory: Path, subject: Subject, label_space: LabelSpace | None,
               settings: PreprocessingSettings) -> None:
    """Worker-process body of :meth:`VolumeCache.fill` (module level, so it can be pickled)."""
    VolumeCache(directory).load(subject, label_space, settings)
