"""Pictures of segmentations: a slice of the image beside ground truth and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

_COLOURS = ["#00000000", "#1f77b4", "#2ca02c", "#ffdd00", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#e377c2"]


def most_labelled_slice(label: np.ndarray, axis: int = 2) -> int:
    """Index along ``axis`` of the slice with the most foreground voxels."""
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax((label > 0).sum(axis=other)))


def save_comparison_png(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str = "",
    axis: int = 2,
) -> Path:
    """Write a PNG: the image slice, ground truth overlaid, prediction overlaid.

    ``image``, ``truth`` and ``prediction`` are 3D arrays on the same grid; the slice is the
    one with the most ground-truth foreground along ``axis``.
    """
    index = most_labelled_slice(truth, axis)
    take = [slice(None)] * 3
    take[axis] = index

    def view(volume: np.ndarray) -> np.ndarray:
        return np.rot90(volume[tuple(take)])

    cmap = ListedColormap(_COLOURS[: max(2, len(class_names))])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    base = view(image)
    # Grey levels from the brain's 1st-99th percentiles; the zero background shows black.
    brain = image[image != 0]
    low, high = np.percentile(brain, [1, 99]) if brain.size else (0.0, 1.0)
    base = np.where(base == 0, low, base)
    for ax, overlay, name in zip(axes, (None, truth, prediction), ("image", "ground truth", "prediction"), strict=True):
        ax.imshow(base, cmap="gray", vmin=low, vmax=high)
        if overlay is not None:
            ax.imshow(view(overlay), cmap=cmap, vmin=0, vmax=cmap.N - 1, alpha=0.5, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [Patch(color=_COLOURS[i], label=n) for i, n in enumerate(class_names) if i > 0]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{title}  (slice {index} of axis {axis})".strip())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
