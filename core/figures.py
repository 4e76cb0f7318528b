"""Pictures of segmentations: slices in three planes, ground truth and prediction over the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, to_hex  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from core.io import atomic_path  # noqa: E402

_COLOURS = ["#00000000", "#1f77b4", "#2ca02c", "#ffdd00", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#e377c2"]


PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}  # the voxel axis each plane cuts, for RAS+ volumes
# Fixed layouts (no second rendering pass to crop): room for the axis labels and titles of the
# two learning-curve panels (11 x 4 inches), and for the panel titles and legend of the 3 x 2
# slices of a comparison (8 x 12 inches).
LEARNING_CURVE_MARGINS = {"left": 0.08, "right": 0.98, "bottom": 0.13, "top": 0.84, "wspace": 0.24}
COMPARISON_MARGINS = {"left": 0.02, "right": 0.98, "bottom": 0.05, "top": 0.94, "hspace": 0.12, "wspace": 0.04}
LEGEND_COLUMNS = 5  # a comparison's legend: classes per row (up to two rows fit under the slices)
MAX_LABELLED_CURVES = 10  # more structures than this (aseg's 45): drawn thin, only their mean named


def _save(fig: plt.Figure, path: Path, title: str, dpi: int, margins: Mapping[str, float] | None = None) -> Path:
    """Write ``fig`` atomically; with ``margins`` (``subplots_adjust``'s) the layout is fixed, else
    cropped to what is drawn (``bbox_inches="tight"``: a second rendering pass, 0.09 s of the
    learning curves' 0.24 s and 0.12 s of a comparison's 0.38 s, paid after every validation)."""
    fig.suptitle(title)
    path = Path(path)
    if margins is not None:
        fig.subplots_adjust(**margins)
    try:
        with atomic_path(path) as tmp:  # never a half-drawn picture under the final name
            fig.savefig(tmp, dpi=dpi, bbox_inches=None if margins is not None else "tight",
                        format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


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
) -> Path:
    """Write a PNG: axial, coronal and sagittal slices (rows) through the structures, ground
    truth and prediction (columns) overlaid on the image (the first modality).

    ``image``, ``truth`` and ``prediction`` are 3D arrays on the same RAS+ grid (what the
    DataModules produce); each plane's slice is the one with the most ground-truth foreground.
    Ignored voxels (negative labels) show no colour.
    """
    colours = class_colours(len(class_names))
    cmap = ListedColormap(colours)
    # Grey levels from the brain's 1st-99th percentiles; the zero background shows black.
    brain = image[image != 0]
    low, high = np.percentile(brain, [1, 99]) if brain.size else (0.0, 1.0)
    fig, axes = plt.subplots(len(PLANES), 2, figsize=(8, 12))
    for row, (plane, axis) in enumerate(PLANES.items()):
        index = most_labelled_slice(truth, axis)

        def view(volume: np.ndarray, axis: int = axis, index: int = index) -> np.ndarray:
            return np.rot90(np.take(volume, index, axis=axis))  # superior / anterior up

        base = view(image)
        base = np.where(base == 0, low, base)
        for ax, overlay, name in zip(axes[row], (truth, prediction), ("ground truth", "prediction"), strict=True):
            ax.imshow(base, cmap="gray", vmin=low, vmax=high)
            ax.imshow(np.clip(view(overlay), 0, None), cmap=cmap, vmin=0, vmax=cmap.N - 1, alpha=0.5,
                      interpolation="nearest")
            ax.set_title(f"{name}, {plane} {index}")
            ax.axis("off")
    handles = [Patch(color=colours[i], label=n) for i, n in enumerate(class_names) if i > 0]
    if len(handles) > 2 * LEGEND_COLUMNS:  # aseg's 45 names: a small legend, the frame cropped around it
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.04), ncol=4, frameon=False,
                   fontsize="small")
        fig.subplots_adjust(**COMPARISON_MARGINS)
        return _save(fig, path, title, dpi=80)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), LEGEND_COLUMNS), frameon=False)
    return _save(fig, path, title, dpi=80, margins=COMPARISON_MARGINS)


def class_colours(count: int) -> list:
    """A colour per class, background transparent: the fixed palette, or for more classes than it
    has (aseg's 45 structures) as many from matplotlib's qualitative maps, none repeated."""
    if count <= len(_COLOURS):
        return _COLOURS[: max(2, count)]
    used = {c.lower() for c in _COLOURS}
    qualitative = [to_hex(c) for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    qualitative = [c for c in dict.fromkeys(qualitative) if c not in used]  # the 53 the palette lacks
    extra = [qualitative[i % len(qualitative)] for i in range(count - len(_COLOURS))]
    return [*_COLOURS, *extra]


def curve_styles(history: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, dict[str, Any]]:
    """How each learning curve of ``history`` is drawn (``plot``'s keywords; curves it does not
    draw left out): losses and up to :data:`MAX_LABELLED_CURVES` structures each named, more (aseg's
    45) thin and unnamed, with only their mean named."""
    structures = [n for n in history if "/dice_" in n and not n.endswith("_mean")]
    named = len(structures) <= MAX_LABELLED_CURVES
    styles: dict[str, dict[str, Any]] = {}
    for name in history:
        if name.endswith("loss"):
            styles[name] = {"marker": ".", "label": name}
        elif name.endswith("_mean"):
            styles[name] = {"marker": ".", "linewidth": 2.5, "label": "mean"} if named else {
                "marker": ".", "linewidth": 2.5, "color": "black",
                "label": f"mean of {len(structures)} structures (thin lines)"}
        elif "/dice_" in name:
            styles[name] = ({"marker": ".", "linewidth": 1.2, "label": name.split("/dice_")[1]} if named
                            else {"linewidth": 0.6, "alpha": 0.5})
    return styles


def save_learning_curves_png(history: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """Write a PNG: losses (left) and Dice per region (right) against the epoch.

    ``history`` maps a metric name (``train/loss``, ``val/loss``, ``val/dice_<region>``,
    ``val/dice_mean``) to its ``(epoch, value)`` points."""
    fig, (losses, dice) = plt.subplots(1, 2, figsize=(11, 4))
    styles = curve_styles(history)
    for name, points in sorted(history.items()):
        if points and name in styles:
            epochs, values = zip(*points, strict=True)
            (losses if name.endswith("loss") else dice).plot(epochs, values, **styles[name])
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    dice.set(xlabel="epoch", ylabel="Dice (whole validation volumes)", title="validation Dice", ylim=(0, 1))
    for ax in (losses, dice):
        if ax.lines:
            ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    return _save(fig, path, title, dpi=90, margins=LEARNING_CURVE_MARGINS)


def save_score_boxplots(scores: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], path: Path,
                        title: str = "DSC per subject") -> Path:
    """Box plots of per-subject scores: one row per dataset, one panel per structure, one box
    per group (``scores[dataset][structure][group]``), the subjects drawn as points over it."""
    datasets = list(scores)
    columns = max((len(structures) for structures in scores.values()), default=1)
    fig, axes = plt.subplots(len(datasets) or 1, columns, figsize=(3.2 * columns, 3.4 * max(len(datasets), 1)),
                             squeeze=False)
    for row, dataset in enumerate(datasets):
        for column in range(columns):
            ax = axes[row][column]
            structures = list(scores[dataset])
            if column >= len(structures):
                ax.axis("off")
                continue
            groups = scores[dataset][structures[column]]
            data = [[v for v in values if not np.isnan(v)] for values in groups.values()]
            ax.boxplot(data, showfliers=False)
            for i, values in enumerate(data, start=1):
                ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=10, alpha=0.7)
            ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{dataset}: {structures[column]}", fontsize=9)
            ax.set_ylim(min([0.0, *[min(v) for v in data if v]]), 1.0)
    fig.tight_layout()
    return _save(fig, path, title, dpi=100)
