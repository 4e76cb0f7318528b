"""Which code produced a result: the git commit and whether the tree had uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def code_version(root: str | Path) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git tree at ``root``; None values outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``{"model": {"network": "unet3d"}}`` ->
    ``{"model.network": "unet3d"}``); lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
