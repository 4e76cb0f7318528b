"""File-name patterns with placeholders (``{site}/{subject}/{modality}.nii.gz``): how the generic
NIfTI DataModule finds a dataset's images and labels, and how ``evaluate.py --gt-pattern`` finds
the same labels, without Lightning."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from core.io import DataError
from core.volumes import natural_key

_FIELD = re.compile(r"\{(\w+)\}")


def pattern_fields(pattern: str) -> list[str]:
    """The placeholders of a file pattern other than ``{modality}``, in order of first use."""
    return list(dict.fromkeys(f for f in _FIELD.findall(pattern) if f != "modality"))


def pattern_regex(pattern: str, modality: str | None = None) -> re.Pattern[str]:
    """``{site}/{subject}/{modality}.nii.gz`` with the modality filled in, as a regex capturing
    every other placeholder (one folder or file-name part each; repeats must agree)."""
    if "{subject}" not in pattern:
        raise ValueError(f"file pattern {pattern!r} must contain {{subject}}")
    seen: set[str] = set()
    regex = []
    for i, part in enumerate(_FIELD.split(pattern)):
        if i % 2 == 0:
            regex.append(re.escape(part))
        elif part == "modality":
            if modality is None:
                raise ValueError(f"file pattern {pattern!r}: {{modality}} has no value here")
            regex.append(re.escape(modality))
        else:
            regex.append(f"(?P={part})" if part in seen else f"(?P<{part}>[^/]+)")
            seen.add(part)
    return re.compile(f"^{''.join(regex)}$")


def subject_id(fields: dict[str, str], names: Sequence[str]) -> str:
    """``{subject}`` alone names the subject; with more placeholders (``{site}``), their values
    joined by ``_`` in pattern order (``siteA_patient01``), so ids stay unique across sites."""
    return fields["subject"] if list(names) == ["subject"] else "_".join(fields[n] for n in names)


def matches(folder: Path, pattern: str, modality: str | None = None) -> dict[str, dict[str, str]]:
    """Subject id -> the placeholders' values, for every file below ``folder`` that ``pattern``
    names, in natural order of the ids."""
    regex, names = pattern_regex(pattern, modality), pattern_fields(pattern)
    found = {}
    for path in folder.rglob("*"):
        if match := regex.match(path.relative_to(folder).as_posix()):
            found[subject_id(match.groupdict(), names)] = match.groupdict()
    return {sid: found[sid] for sid in sorted(found, key=natural_key)}


def files_by_pattern(folder: Path, pattern: str) -> dict[str, Path]:
    """Subject id -> file, for the files below ``folder`` that a pattern without ``{modality}``
    names (a label pattern); a folder without any is an error naming the pattern."""
    found = {sid: folder / pattern.format(**fields) for sid, fields in matches(folder, pattern).items()}
    if not found:
        example = pattern.format(**{n: f"<{n}>" for n in pattern_fields(pattern)})
        raise DataError(f"{folder}: no files named like {example}")
    return found
