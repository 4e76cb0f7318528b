"""Count the checks a test suite makes, as written in its source: ``assert`` statements,
``pytest.raises`` / ``pytest.warns`` blocks and ``*.testing.assert_*`` calls (a check in a loop
or a parametrised test counts once), and the test functions.

    python scripts/count_checks.py tests [other/tests ...]   # e.g. a `git archive` of an older commit

Refactors of the suite keep this number from going down.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def count_checks(folder: Path) -> dict[str, int]:
    """The checks of every ``*.py`` file directly in ``folder``."""
    totals = {"assert": 0, "raises/warns": 0, "testing.assert_*": 0, "test functions": 0}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assert):
                totals["assert"] += 1
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if owner == "pytest" and node.func.attr in ("raises", "warns"):
                    totals["raises/warns"] += 1
                elif owner.endswith("testing") and node.func.attr.startswith("assert_"):
                    totals["testing.assert_*"] += 1
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                totals["test functions"] += 1
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    for folder in parser.parse_args(argv).folders:
        totals = count_checks(folder)
        checks = totals["assert"] + totals["raises/warns"] + totals["testing.assert_*"]
        print(f"{folder}: {checks} checks ({', '.join(f'{k} {v}' for k, v in totals.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
