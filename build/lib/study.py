"""Run a study: a grid of networks x datasets x folds x seeds, each cell trained and tested
with its own checkpoint, then one comparison table.

    python study.py configs/studies/demo.yaml                      # the whole grid
    python study.py configs/studies/demo.yaml --networks unet3d --seeds 0 --smoke
    python study.py configs/studies/thesis.yaml --datasets iseg2017 --set iseg2017.data_dir=/data/iSeg-2017-Training
    python study.py configs/studies/demo.yaml --dry-run            # print the commands only

A study file names the configs every cell starts from, the datasets and networks (each its
configs and CLI overrides), the seeds and folds, and overrides for chosen cells (see
``configs/studies/``). Each cell is a run folder ``<output>/<dataset>/<network>/<fold-seed>/``
holding ``checkpoints/``, ``test/`` (the report of its own ``best.ckpt``) and its logs; W&B runs
are grouped by study and tagged with network, dataset, fold and seed.

Resumable: a cell whose test report exists is skipped; one with checkpoints but no report
resumes its fit from ``last.ckpt`` and is then tested. ``--smoke`` makes every cell cheap (2
training batches, one validation volume, no sanity pass, no window overlap): it checks the
whole grid runs before the real study is started. ``study.json`` records each cell's state and
times; ``compare_runs.py`` then writes the comparison (CIs, paired tests) into the study folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.io import DataError, write_text_atomically

ROOT = Path(__file__).resolve().parent
# What --smoke adds to every cell (a study file's ``smoke:`` mapping adds to or replaces these).
SMOKE = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.check_val_every_n_epoch": 1,
    "trainer.log_every_n_steps": 1,
    "model.sw_overlap": 0.0,
}


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    network: str
    seed: int
    fold: int | None
    configs: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"fold{self.fold}-"
        return f"{self.dataset}/{self.network}/{fold}seed{self.seed}"


@dataclass
class Study:
    """A study file, read and checked."""

    name: str
    configs: list[str]
    datasets: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    seeds: list[int]
    folds: list[int | None]
    args: dict[str, Any]
    overrides: list[dict[str, Any]]
    smoke: dict[str, Any]
    wandb: bool
    source: Path

    @classmethod
    def from_file(cls, path: str | Path) -> Study:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: study file not found")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"name", "configs", "datasets", "networks", "seeds", "folds", "args", "overrides",
                               "smoke", "wandb"}
        if unknown:
            raise DataError(f"{path}: unknown keys {sorted(unknown)}")
        for key in ("datasets", "networks"):
            if not data.get(key):
                raise DataError(f"{path}: '{key}' must name at least one entry")
        return cls(name=str(data.get("name") or path.stem), configs=list(data.get("configs") or []),
                   datasets={k: dict(v or {}) for k, v in data["datasets"].items()},
                   networks={k: dict(v or {}) for k, v in data["networks"].items()},
                   seeds=[int(s) for s in data.get("seeds") or [0]],
                   folds=[int(f) for f in data.get("folds") or []] or [None],
                   args=dict(data.get("args") or {}), overrides=list(data.get("overrides") or []),
                   smoke={**SMOKE, **(data.get("smoke") or {})}, wandb=bool(data.get("wandb", True)), source=path)

    def cells(self, datasets: Sequence[str] | None = None, networks: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, folds: Sequence[int] | None = None) -> list[Cell]:
        """The grid, or the subset asked for on the command line (unknown names are errors)."""
        for asked, known, what in ((datasets, self.datasets, "dataset"), (networks, self.networks, "network")):
            missing = sorted(set(asked or ()) - set(known))
            if missing:
                raise DataError(f"{self.source}: no {what} {missing}; the study has {sorted(known)}")
        cells = []
        for dataset in datasets or self.datasets:
            for network in networks or self.networks:
                for fold in (folds if folds else self.folds):
                    for seed in (seeds if seeds else self.seeds):
                        entries = [self.datasets[dataset], self.networks[network]]
                        configs = [*self.configs, *(c for e in entries for c in e.get("configs") or [])]
                        args = {**self.args, **{k: v for e in entries for k, v in (e.get("args") or {}).items()}}
                        for override in self.overrides:
                            if (dataset in override.get("datasets", [dataset])
                                    and network in override.get("networks", [network])):
                                args.update(override.get("args") or {})
                        cells.append(Cell(dataset, network, seed, fold, tuple(configs), args))
        return cells


def as_cli(args: Mapping[str, Any]) -> list[str]:
    """``{"trainer.max_epochs": 2, "data.init_args.patch_size": [48, 48, 48]}`` -> CLI flags."""
    flags = []
    for key, value in args.items():
        flags += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return flags


@dataclass
class Runner:
    """Runs the cells of a study as ``train.py`` processes (the interpreter running this one)."""

    study: Study
    output: Path
    smoke: bool = False
    dry_run: bool = False
    extra: list[str] = field(default_factory=list)

    def folder(self, cell: Cell) -> Path:
        return self.output / cell.name

    def common(self, cell: Cell) -> list[str]:
        """The flags shared by the cell's fit and test."""
        args: dict[str, Any] = {**cell.args, "seed_everything": cell.seed}
        if cell.fold is not None:
            args["data.init_args.fold"] = cell.fold
        if self.smoke:
            args.update(self.study.smoke)
        if self.study.wandb:
            tags = [f"network:{cell.network}", f"dataset:{cell.dataset}", f"seed:{cell.seed}"]
            tags += [] if cell.fold is None else [f"fold:{cell.fold}"]
            args.update({"trainer.logger.init_args.group": self.study.name,
                         "trainer.logger.init_args.name": cell.name, "trainer.logger.init_args.tags": tags,
                         "trainer.logger.init_args.save_dir": str(self.folder(cell))})
        return [*(f for c in cell.configs for f in ("--config", c)), *as_cli(args), *self.extra]

    def commands(self, cell: Cell) -> list[list[str]]:
        """What is left to do for the cell: fit (resumed when it has a last.ckpt), then test."""
        folder = self.folder(cell)
        if (folder / "test" / "metrics.csv").is_file():
            return []
        last = folder / "checkpoints" / "last.ckpt"
        fit = [sys.executable, "train.py", "fit", *self.common(cell),
               "--checkpoint.dirpath", str(folder / "checkpoints"), "--trainer.default_root_dir", str(folder)]
        if last.is_file():
            fit += ["--ckpt_path", str(last)]
        test = [sys.executable, "train.py", "test", *self.common(cell),
                "--ckpt_path", str(folder / "checkpoints" / "best.ckpt"),
                "--test_report.output_dir", str(folder / "test"), "--trainer.default_root_dir", str(folder)]
        return [fit, test]

    def run(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        """Run every unfinished cell in order; returns one status record per cell."""
        records = []
        for index, cell in enumerate(cells, start=1):
            commands = self.commands(cell)
            record: dict[str, Any] = {"cell": cell.name, "state": "done" if not commands else "pending",
                                      "seconds": 0.0}
            print(f"[{index}/{len(cells)}] {cell.name}: " + ("finished earlier, skipped" if not commands
                                                             else f"{len(commands)} steps"), flush=True)
            for command in commands:
                if self.dry_run:
                    print("  " + shlex.join(command))
                    continue
                start = time.perf_counter()
                done = subprocess.run(command, cwd=ROOT)
                record["seconds"] += time.perf_counter() - start
                if done.returncode != 0:
                    record["state"] = f"failed ({command[2]}, exit {done.returncode})"
                    break
            else:
                record["state"] = "dry run" if self.dry_run and commands else "done"
            records.append(record)
            if not self.dry_run:
                self.write_status(records, cells)
        return records

    def write_status(self, records: Sequence[Mapping[str, Any]], cells: Sequence[Cell]) -> None:
        status = {"study": self.study.name, "source": str(self.study.source), "smoke": self.smoke,
                  "cells": [{**r, "folder": str(self.folder(c))} for r, c in zip(records, cells, strict=False)]}
        write_text_atomically(self.output / "study.json", json.dumps(status, indent=1))


def status_table(records: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| cell | state | seconds |", "|---|---|---:|"]
    lines += [f"| {r['cell']} | {r['state']} | {r['seconds']:.0f} |" for r in records]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study file (configs/studies/*.yaml)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets of the study")
    parser.add_argument("--networks", nargs="+", help="only these networks of the study")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--folds", nargs="+", type=int, help="only these folds")
    parser.add_argument("--smoke", action="store_true", help="every cell as cheap as it gets: does the grid run?")
    parser.add_argument("--output", type=Path, help="study folder (default: runs/studies/<name>[-smoke])")
    parser.add_argument("--set", action="append", default=[], metavar="DATASET.KEY=VALUE",
                        help="a dataset's CLI override, e.g. iseg2017.data_dir=/data/iSeg-2017-Training "
                             "(data_dir is short for data.init_args.data_dir)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args, extra = parser.parse_known_args(argv)
    try:
        study = Study.from_file(args.study)
        for item in args.set:
            target, sep, value = item.partition("=")
            dataset, dot, key = target.partition(".")
            if not sep or not dot or dataset not in study.datasets:
                raise DataError(f"--set {item!r}: expected DATASET.KEY=VALUE, DATASET one of {sorted(study.datasets)}")
            key = "data.init_args.data_dir" if key == "data_dir" else key
            study.datasets[dataset].setdefault("args", {})[key] = yaml.safe_load(value)
        cells = study.cells(args.datasets, args.networks, args.seeds, args.folds)
    except DataError as error:
        parser.exit(2, f"study.py: error: {error}\n")
    output = args.output or ROOT / "runs" / "studies" / (study.name + ("-smoke" if args.smoke else ""))
    runner = Runner(study, output, smoke=args.smoke, dry_run=args.dry_run, extra=list(extra))
    start = time.perf_counter()
    records = runner.run(cells)
    if args.dry_run:
        return 0
    print(f"\nstudy {study.name}: {len(cells)} cells in {time.perf_counter() - start:.0f} s\n" + status_table(records))
    if any(r["state"] == "done" for r in records):
        from compare_runs import main as compare

        compare([str(output)])
    return 0 if all(r["state"] == "done" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
