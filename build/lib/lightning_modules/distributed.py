"""Per-subject results gathered from every process, each subject once."""

from __future__ import annotations

from typing import TypeVar

import torch

T = TypeVar("T")


def gather_by_subject(results: dict[str, T]) -> dict[str, T]:
    """Every process's ``subject -> result`` merged on every process (one process: unchanged).

    Keyed by subject id, so a subject evaluated by two processes (a padding sampler) still
    counts once; subjects keep the processes' order (rank 0's first)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(results)
    gathered: list[dict[str, T] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, results)
    merged: dict[str, T] = {}
    for part in gathered:
        for subject, result in (part or {}).items():
            merged.setdefault(subject, result)
    return merged
