"""The shipped YAML presets (``configs/``): found by name from any folder, installed or not, and
what a command line lacks before LightningCLI reads it.

    train.py fit --config demo                       # configs/demo.yaml
    train.py fit --config datasets/iseg2017 --config experiments/iseg2017 --data.init_args.data_dir ...

A ``--config`` that is an existing file is used as given; otherwise ``NAME`` (or ``NAME.yaml``,
or ``configs/NAME.yaml`` from another folder) is looked up among the presets, which
``pip install .`` ships beside the packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from core.io import DataError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # a checkout's or the installed copy
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def preset_names() -> list[str]:
    """Every preset's name (``demo``, ``datasets/iseg2017``, ...)."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """An existing file as given, else the preset of that name; unknown names are left for
    LightningCLI to refuse with its own message."""
    if Path(value).is_file():
        return value
    name = value.removeprefix("configs/").removesuffix(".yaml")
    preset = CONFIG_DIR / f"{name}.yaml"
    return str(preset) if preset.is_file() else value


def _config_values(args: Sequence[str]) -> list[tuple[int, str]]:
    """(position, value) of every ``--config``/``-c`` value in ``args``."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            found.append((i + 1, args[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, arg.split("=", 1)[1]))
    return found


def resolve_presets(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config`` value resolved (:func:`resolve_config`)."""
    resolved = list(args)
    for i, value in _config_values(args):
        prefix = "--config=" if resolved[i].startswith("--config=") else ""
        resolved[i] = prefix + resolve_config(value)
    return resolved


def _names_data(config: Any) -> bool:
    data = config.get("data") if isinstance(config, dict) else None
    return isinstance(data, str) or (isinstance(data, dict) and "class_path" in data)


def missing_dataset(args: Sequence[str]) -> str | None:
    """Why a ``fit``/``validate``/``test``/``predict`` command line names no dataset (its configs
    are presets of a model, recipe or experiment only), or None when it names one or cannot be
    judged here (a help request, an unreadable config: LightningCLI says what is wrong)."""
    asks_help = any(a in ("-h", "--help") or a.startswith(("--print_config", "--network_help")) for a in args)
    if asks_help or not any(a in SUBCOMMANDS for a in args):
        return None
    if any(a == "--data" or a.startswith(("--data=", "--data.class_path")) for a in args):
        return None
    configs = [value for _, value in _config_values(args)]
    for value in configs:
        try:
            config = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None
        if _names_data(config) or (isinstance(config, dict) and any(_names_data(config.get(c) or {})
                                                                    for c in SUBCOMMANDS)):
            return None
    given = ", ".join(configs) if configs else "the command line"
    return (f"no dataset: no data module (data.class_path) in {given}; give a data config first, e.g. "
            f"--config datasets/iseg2017 (presets: {', '.join(n for n in preset_names() if n.startswith('datasets/'))}"
            ") or --config demo")


def check_command_line(args: Sequence[str]) -> list[str]:
    """``args`` with presets resolved; a command line that names no dataset is a :class:`DataError`."""
    resolved = resolve_presets(args)
    problem = missing_dataset(resolved)
    if problem:
        raise DataError(problem)
    return resolved
