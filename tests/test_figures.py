"""core.figures: pictures in fixed layouts, legible for label spaces of any size."""

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

from core.dataset_labels import FREESURFER_ASEG, ISEG
from core.figures import class_colours, curve_styles, save_comparison_png, save_learning_curves_png


def test_a_comparison_is_its_fixed_frame_and_many_classes_get_distinct_colours_and_room(tmp_path: Path) -> None:
    """Four classes: exactly the 8 x 12 inch frame at 80 dpi (no crop pass). aseg's 46: a colour
    each, none repeated, and a frame grown around their legend rather than cut through it."""
    rng = np.random.default_rng(0)
    image = rng.random((24, 24, 24)).astype(np.float32) + 1
    small = save_comparison_png(image, rng.integers(0, 4, image.shape), rng.integers(0, 4, image.shape),
                                ISEG.class_names, tmp_path / "iseg.png")
    assert mpimg.imread(small).shape[:2] == (960, 640)
    colours = class_colours(FREESURFER_ASEG.num_classes)
    assert len(colours) == 46 and len({c.lower() for c in colours}) == 46
    labels = rng.integers(0, 46, image.shape)
    large = mpimg.imread(save_comparison_png(image, labels, labels, FREESURFER_ASEG.class_names, tmp_path / "aseg.png"))
    assert large.shape[0] > 960 + 100  # twelve rows of names under the slices


def test_learning_curves_are_their_fixed_frame_whatever_the_number_of_structures(tmp_path: Path) -> None:
    history = {"train/loss": [(0, 1.0), (1, 0.8)], "val/loss": [(0, 1.1), (1, 0.9)],
               "val/dice_mean": [(0, 0.3), (1, 0.5)]}
    for n in range(45):
        history[f"val/dice_s{n}"] = [(0, n / 50), (1, n / 45)]
    path = save_learning_curves_png(history, tmp_path / "curves.png", "unet3d")
    assert mpimg.imread(path).shape[:2] == (360, 990)  # 11 x 4 inches at 90 dpi
    labels = {name: style.get("label") for name, style in curve_styles(history).items()}
    assert labels["val/dice_mean"] == "mean of 45 structures (thin lines)" and labels["train/loss"] == "train/loss"
    assert [n for n, label in labels.items() if label is None] == [f"val/dice_s{n}" for n in range(45)]
    few = curve_styles({**{f"val/dice_s{n}": [(0, 0.5)] for n in range(3)}, "val/dice_mean": [(0, 0.5)]})
    assert [style["label"] for style in few.values()] == ["s0", "s1", "s2", "mean"]
