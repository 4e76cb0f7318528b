"""The house's layering, read from the source: no import cycles, no arrow from a lower package
to a higher one, no Lightning below ``datamodules`` / ``lightning_modules``.

    networks  <-  core  <-  datamodules, lightning_modules  <-  train.py, predict.py, ... (entry)
                                                            <-  benchmarks, scripts

Run ``python -m pytest tests/test_architecture.py -q`` (or ``python scripts/import_graph.py``
to print the package graph).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.import_graph import ROOT, first_party_imports, module_graph, package_graph

# Which of our packages each package may import (itself always).
ALLOWED = {
    "networks": set(),
    "core": {"networks"},
    "datamodules": {"core"},
    "lightning_modules": {"core", "networks"},
    "demo": {"core"},
    "entry": {"core", "networks", "datamodules", "lightning_modules"},
    "scripts": {"core", "networks", "datamodules", "lightning_modules"},
    "benchmarks": {"core", "networks", "datamodules", "lightning_modules", "entry", "demo"},
}
THIRD_PARTY_FORBIDDEN = {"networks": {"pytorch_lightning", "lightning"}, "core": {"pytorch_lightning", "lightning"}}


def test_packages_only_import_downwards() -> None:
    graph = package_graph()
    assert set(graph) == set(ALLOWED), "every package and the entry scripts have a place in ALLOWED"
    for package, allowed in ALLOWED.items():
        assert graph[package] - {package} <= allowed, f"{package} imports {graph[package] - {package} - allowed}"


def test_no_lightning_below_the_lightning_layer() -> None:
    for package, forbidden in THIRD_PARTY_FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            imported = {name.split(".")[0] for name in first_party_imports(path, third_party=True)}
            assert not imported & forbidden, f"{path} imports {imported & forbidden}"


def test_no_import_cycles_between_modules() -> None:
    graph = module_graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in graph.get(module, ()):
            assert state.get(other) != 1, f"import cycle: {' -> '.join([*path, module, other])}"
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.slow  # a Python process of its own
def test_predict_py_answers_help_before_importing_torch() -> None:
    """``predict.py --help`` (and a mistyped option) answers at once: torch, MONAI, the networks
    and Lightning are imported after the command line is read (4.7 s of imports before, 0.16 s now
    on a 2-core Xeon)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "predict.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert "--checkpoint CHECKPOINT" in out.stdout and "--precision {32,bf16}" in out.stdout
    loaded = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "core.io" in loaded
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {"torch", "monai", "pytorch_lightning", "lightning", "networks", "datamodules"}


@pytest.mark.slow  # a Python process of its own
def test_scoring_loads_no_lightning() -> None:
    """``evaluate.py --help`` (numpy metrics) imports neither Lightning nor a network."""
    out = subprocess.run([sys.executable, "-X", "importtime", "evaluate.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in out.splitlines() if line.startswith("import time:")}
    assert "core.metrics" in loaded
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {"pytorch_lightning", "lightning", "networks", "datamodules", "lightning_modules"}
