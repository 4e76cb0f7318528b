"""The model table's counts against hand-computed ones, and a tiny step measurement."""

import pytest
from torch import nn

from benchmarks.model_table import (
    ISEG_PATCH,
    SUBVOLUME_PATCH,
    count_macs,
    count_parameters,
    markdown_table,
    measure_in_subprocess,
    table_row,
)
from networks import build_network

# densenet3d, 2 channels, 4 classes, at 32^3: nine unpadded 3x3x3 convolutions, layer i (0-based) sees
# 2 + (maps of layers before it) channels at (32 - 2i)^3 and writes k_i maps at (30 - 2i)^3; then 1x1x1
# convolutions 452 -> 400 -> 200 -> 150 -> 4 at 14^3. Biases are not counted. Per layer:
DENSENET3D_MACS_32 = (
    30**3 * 27 * 2 * 25      # 36_450_000, the first convolution
    + 28**3 * 27 * 27 * 25   # its input: 2 + 25
    + 26**3 * 27 * 52 * 25
    + 24**3 * 27 * 77 * 50
    + 22**3 * 27 * 127 * 50
    + 20**3 * 27 * 177 * 50
    + 18**3 * 27 * 227 * 75
    + 16**3 * 27 * 302 * 75
    + 14**3 * 27 * 377 * 75
    + 14**3 * (452 * 400 + 400 * 200 + 200 * 150 + 150 * 4)
)


def test_densenet3d_params_and_hand_computed_macs() -> None:
    row = table_row("densenet3d")
    assert row.patch == SUBVOLUME_PATCH
    assert row.counted_on == "meta"
    assert row.params == count_parameters(build_network("densenet3d", in_channels=2, num_classes=4))
    # The counter on the first convolution alone: 30^3 outputs x 27 taps x 2 inputs x 25 maps.
    assert count_macs(nn.Conv3d(2, 25, 3, bias=False), 2, (32, 32, 32)) == 36_450_000
    assert row.macs == DENSENET3D_MACS_32


def test_unet3d_params_and_macs() -> None:
    row = table_row("unet3d")
    assert row.patch == ISEG_PATCH
    assert row.params == count_parameters(build_network("unet3d", in_channels=2, num_classes=4))
    # Its first convolution alone, 2 -> 32 maps of 3x3x3 at 128x128x64, is a lower bound.
    assert row.macs > 128 * 128 * 64 * 27 * 2 * 32
    table = markdown_table([row], step_size=None)
    assert f"| unet3d | 2 | {row.params / 1e6:.2f} | 10.0 | 128x128x64 | {row.macs / 1e9:.1f} |" in table


@pytest.mark.slow  # a Python process of its own
def test_step_measurement_in_a_fresh_process() -> None:
    # One thread: on a shared machine, threads waiting on busy cores make tiny steps slow.
    seconds, gib = measure_in_subprocess("unet3d", 16, overrides={"base_features": 2}, threads=1)
    assert seconds > 0
    assert gib > 0
