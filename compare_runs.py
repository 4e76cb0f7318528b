"""The thesis-style comparison table from several runs' test reports.

    python compare_runs.py runs/study            # every run below (any */test/metrics.csv)
    python compare_runs.py runs/a runs/b ...

A run is a folder with ``checkpoints/*.ckpt`` and the ``test/metrics.csv`` that
``train.py test`` wrote beside them (``scripts/thesis_study.sh`` makes one per network and
dataset). The network and dataset come from the checkpoint. Prints, per dataset, one row per
network with the mean DSC of each region over the test subjects and their mean, then the
network x dataset table of those means (the thesis' Table 2 layout, but on whole held-out
volumes).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from core.segmenter import read_checkpoint


def find_reports(paths: Sequence[Path]) -> list[Path]:
    """Every ``test/metrics.csv`` at or below ``paths``."""
    reports = []
    for path in paths:
        direct = Path(path) / "test" / "metrics.csv"
        reports += [direct] if direct.is_file() else sorted(Path(path).rglob("test/metrics.csv"))
    return reports


def describe_run(run: Path) -> tuple[str, str]:
    """(network, dataset) of a run, from its checkpoint."""
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: p.name != "best.ckpt")
    if not checkpoints:
        raise FileNotFoundError(f"{run}: no checkpoints/*.ckpt beside test/metrics.csv")
    checkpoint = read_checkpoint(checkpoints[0])  # weights_only: a checkpoint cannot run code
    network = checkpoint["hyper_parameters"]["network"]
    dataset = checkpoint.get("datamodule_class", "unknown").rsplit(".", 1)[-1].removesuffix("DataModule")
    mode = (checkpoint.get("datamodule_hyper_parameters") or {}).get("label_mode")
    return network, f"{dataset} ({mode})" if mode else dataset


def region_means(report: Path) -> dict[str, float]:
    """Mean DSC per region over the subjects of one test report."""
    values: dict[str, list[float]] = defaultdict(list)
    with open(report, newline="") as handle:
        for row in csv.DictReader(handle):
            dice = float(row["dice"])
            if not math.isnan(dice):
                values[row["structure"]].append(dice)
    return {region: sum(v) / len(v) for region, v in values.items()}


def comparison_tables(paths: Sequence[Path]) -> str:
    """The Markdown tables (per dataset, then network x dataset)."""
    results: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # dataset -> network -> region -> DSC
    for report in find_reports(paths):
        network, dataset = describe_run(report.parent.parent)
        results[dataset][network] = region_means(report)
    if not results:
        raise FileNotFoundError(f"no test/metrics.csv under {[str(p) for p in paths]}: run train.py test first")
    lines = []
    for dataset, networks in sorted(results.items()):
        regions = list(dict.fromkeys(r for scores in networks.values() for r in scores))
        lines += [f"### {dataset}", "", "| network | " + " | ".join(regions) + " | mean |",
                  "|---|" + "---:|" * (len(regions) + 1)]
        for network, scores in sorted(networks.items(), key=lambda item: -_mean(item[1])):
            cells = [f"{scores[r]:.4f}" if r in scores else "" for r in regions]
            lines.append(f"| {network} | " + " | ".join(cells) + f" | {_mean(scores):.4f} |")
        lines.append("")
    datasets = sorted(results)
    networks = sorted({n for d in results.values() for n in d})
    lines += ["### mean DSC, network x dataset", "", "| network | " + " | ".join(datasets) + " |",
              "|---|" + "---:|" * len(datasets)]
    for network in networks:
        cells = [f"{_mean(results[d][network]):.4f}" if network in results[d] else "" for d in datasets]
        lines.append(f"| {network} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else math.nan


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, or folders holding runs")
    args = parser.parse_args(argv)
    try:
        print(comparison_tables(args.runs))
    except FileNotFoundError as error:
        parser.exit(2, f"compare_runs.py: error: {error}\n")


if __name__ == "__main__":
    main()
