"""Checkpoints written atomically in their own folder: never a truncated ``best.ckpt``.

Lightning's default writer may write through a temporary file elsewhere and copy it across
filesystems; a full disk then leaves a truncated, unloadable checkpoint in place of a good one.
Here the checkpoint goes to a temporary file beside its destination, is flushed to disk, and
only then renamed over it (:func:`core.io.atomic_path`): on any failure the previous checkpoint
stays as it was, the temporary file is removed, and the error names the destination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem

from core.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote paths: Lightning's own writer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return None
