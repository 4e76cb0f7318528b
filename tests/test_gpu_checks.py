"""The GPU checks that a lent machine runs in one call (benchmarks/gpu_check.sh): the script parses,
every section it names exists, and the step table times the compiled networks last."""

import re
import subprocess
from pathlib import Path

from benchmarks.gpu_fast_path import table_rows

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
PATCH = {"128": (128, 128, 128)}


def test_compiled_rows_come_last_and_bf16_only_where_it_is_native() -> None:
    rows = [(name, setting) for name, _, setting, _, _ in
            table_rows(["unet3d", "segresnet"], PATCH, ["unet3d"], native_bf16=True, cuda=True)]
    assert rows == [("unet3d", "fp32"), ("unet3d", "bf16"), ("unet3d", "bf16 + channels_last_3d"),
                    ("segresnet", "fp32"), ("segresnet", "bf16"), ("segresnet", "bf16 + channels_last_3d"),
                    ("unet3d", "bf16 + compile"), ("unet3d", "bf16 + channels_last_3d + compile")]
    on_this_cpu = table_rows(["unet3d"], PATCH, ["unet3d"], native_bf16=False, cuda=False)
    assert [(setting, bf16, channels_last) for _, _, setting, bf16, channels_last in on_this_cpu] == [
        ("fp32", False, False)]


def test_the_gpu_script_parses_and_every_section_it_names_exists() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    text = SCRIPT.read_text()
    handled = set(re.findall(r"^    ([a-z_0-9]+)\)$", text, flags=re.MULTILINE))
    first = re.search(r"SECTIONS=\$\{SECTIONS/first/([a-z_ ]+)\}", text)[1].split()
    assert first == ["env", "speed", "augment"] and set(first) <= handled
    named = set(re.findall(r"^#   ([a-z_0-9]+):", text, flags=re.MULTILINE))  # the header's list
    assert named == handled == {"env", "speed", "augment", "cpu_bf16", "full_speed", "study", "precision", "contrast"}
    for seconds in map(int, re.findall(r"boxed (\d+) ", text)):
        assert seconds <= 580  # a call may run 600 s at most, start-up and the wheels' install included
