"""Print the import graph of the house, read from the source with ``ast``: which first-party
package imports which, and the module-level edges with ``--modules``. The entry scripts
(``train.py``, ``predict.py``, ...) count as one layer, ``entry``, above the packages;
``benchmarks``, ``scripts`` and ``demo`` as packages of their own.

    python scripts/import_graph.py [--modules]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("networks", "core", "datamodules", "lightning_modules", "demo", "benchmarks", "scripts")
ENTRY_SCRIPTS = ("train", "predict", "evaluate", "study", "plan", "compare_runs")  # the layer "entry"
FIRST_PARTY = (*PACKAGES, *ENTRY_SCRIPTS)


def first_party_imports(path: Path, third_party: bool = False) -> set[str]:
    """Dotted names imported by ``path`` (every import, also inside functions); only ours
    unless ``third_party``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return names if third_party else {n for n in names if n.split(".")[0] in FIRST_PARTY}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (``from a import b`` counts as ``a.b``
    when that is a module, else ``a``). Package ``__init__`` re-exports are edges too."""
    modules = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    modules.update({name: ROOT / f"{name}.py" for name in ENTRY_SCRIPTS})
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in first_party_imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def package_graph() -> dict[str, set[str]]:
    """Package (or ``entry``, the entry scripts) -> the first-party packages its modules import."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in module_graph().items():
        graph[layer(module)] |= {layer(t) for t in targets}
    return graph


def layer(module: str) -> str:
    """A module's package, or ``entry`` for the entry scripts."""
    top = module.split(".")[0]
    return "entry" if top in ENTRY_SCRIPTS else top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="print module-level edges too")
    args = parser.parse_args(argv)
    for package, targets in sorted(package_graph().items()):
        print(f"{package:<18} -> {', '.join(sorted(targets - {package})) or '(nothing of ours)'}")
    if args.modules:
        for module, targets in sorted(module_graph().items()):
            print(f"  {module:<32} -> {', '.join(sorted(targets))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
