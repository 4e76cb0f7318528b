"""Compare runs from their test reports: every run, groups over seeds and folds, confidence
intervals and paired tests.

    python compare_runs.py runs/study                # every run below (any */test/metrics.csv)
    python compare_runs.py runs/a runs/b --output comparison/
    python compare_runs.py runs/study --scores nnU-Net=nnunet_scores/   # and another method's scores

A run is a folder with ``checkpoints/*.ckpt`` and the ``test/metrics.csv`` that ``train.py
test`` wrote beside them. Everything else comes from the checkpoint: the dataset, and the run's
full config (``run_record``; older checkpoints: the model's and DataModule's arguments).
``--scores NAME[@DATASET]=FOLDER`` adds a method trained elsewhere (nnU-Net's predictions, say)
by the ``scores.csv`` that ``evaluate.py`` wrote for its segmentations of the same subjects: a
group of its own, in the same tables and paired tests. ``--metric`` compares another score than
the DSC: ``hd95_mm``, or ``lesion_dice`` and ``lesion_hd95_mm``, the lesion-wise scores BraTS
ranks by (reports tested with ``--test_report.lesion_wise``, scores written with ``evaluate.py
--lesion-wise``); groups are ranked best first either way.

Per dataset it reports
- one row per run, with the settings that differ between runs as columns and the mean DSC per
  structure over the test subjects with its 95 % bootstrap confidence interval over subjects;
- groups: runs that differ only in seed or fold, as mean ± std over the runs, and the interval
  of the group's per-subject DSC (averaged over its runs);
- paired Wilcoxon signed-rank tests between groups on the subjects both scored, per structure
  and for the mean over structures, with Holm-adjusted p-values over the pairs;
then the network x dataset table of group means (the thesis' Table 2 layout, on whole held-out
volumes). Writes ``comparison.md`` (also printed), ``comparison_runs.csv``,
``comparison_tests.csv`` and ``comparison.png`` (per-subject DSC box plots per group and
structure) into ``--output`` (default: the first folder given).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from core.checkpoint import HYPER_PARAMETERS, RUN_RECORD, datamodule_record, read_checkpoint
from core.figures import save_score_boxplots
from core.io import DataError, earlier_report, write_text_atomically
from core.metrics import INPUT_PROBLEMS_CSV, csv_text
from core.provenance import flatten
from core.statistics import bootstrap_ci, holm, paired_wilcoxon
from core.study_state import SET_ASIDE_SUFFIX

REPLICATE_KEYS = ("seed_everything", "data.init_args.fold")  # runs differing only here form a group
NETWORK_KEY = "model.network"
NETWORK_OPTIONS = "model.network_kwargs."
# Settings that say where files go or how fast, not what was trained: never a column.
NOT_SETTINGS = ("config", "ckpt_path", "checkpoint.", "trainer.logger", "trainer.default_root_dir",
                "trainer.callbacks", "trainer.plugins", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
                "data.init_args.data_dir", "data.init_args.cache_dir", "data.init_args.num_workers",
                "data.init_args.preprocess_workers", "data.init_args.predict_dir", "test_report.",
                "prediction_writer.", "learning_curves.", "validation_images.", "resume_state.", "network_help",
                "model.label_space", "model.in_channels", "model.modalities", "model.flips",
                "model.predict_flips")  # flips: an inference choice (its name in older run records too)
MEAN = "mean"  # the mean over structures, reported beside them
# What can be compared (a column of the score tables): its title, and whether higher is better.
METRICS = {"dice": ("DSC", True), "lesion_dice": ("lesion-wise DSC", True), "hd95_mm": ("HD95 mm", False),
           "lesion_hd95_mm": ("lesion-wise HD95 mm", False)}
SMALL_SAMPLE = 10  # fewer test subjects than this: say what the intervals and tests cannot show


@dataclass
class Run:
    """One trained and tested model."""

    folder: Path
    dataset: str
    settings: dict[str, Any]  # dotted config keys -> values
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # structure -> subject -> score (DSC)
    external: bool = False  # scores of a method trained elsewhere (evaluate.py's scores.csv): no config
    flagged: list[str] = field(default_factory=list)  # test subjects on scans unlike the training scans

    @property
    def network(self) -> str:
        return str(self.settings.get(NETWORK_KEY, "?"))

    def mean_score(self, structure: str) -> float:
        """Mean over the subjects; for :data:`MEAN`, the mean of the structures' means (as the
        logged ``dice_mean``)."""
        if structure == MEAN:
            return _nanmean([self.mean_score(s) for s in self.scores if s != MEAN])
        return _nanmean(list(self.scores.get(structure, {}).values()))


def find_reports(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Every ``test/metrics.csv`` at or below ``paths``, and apart those that ``study.py
    --rerun-changed`` set aside below a ``<study>.replaced/`` folder (runs of a study's old
    definition, compared only when a path inside that folder is given)."""
    reports, set_aside = [], []
    for path in map(Path, paths):
        direct = path / "test" / "metrics.csv"
        for report in [direct] if direct.is_file() else sorted(path.rglob("test/metrics.csv")):
            inside = report.relative_to(path).parts[:-3]  # the folders between path and the run
            (set_aside if any(part.endswith(SET_ASIDE_SUFFIX) for part in inside) else reports).append(report)
    return reports, set_aside


def run_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config as dotted keys: its record, or the arguments older checkpoints kept."""
    record = checkpoint.get(RUN_RECORD) or {}
    if record.get("config"):
        return flatten(record["config"])
    settings = flatten({"model": dict(checkpoint.get(HYPER_PARAMETERS) or {})})
    settings.update(flatten({"data": {"init_args": datamodule_record(checkpoint)["init_args"]}}))
    return settings


def load_run(report: Path, metric: str = "dice") -> Run:
    folder = report.parent.parent
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"), key=lambda p: p.name != "best.ckpt")
    if not checkpoints:
        raise DataError(f"{folder}: no checkpoints/*.ckpt beside test/metrics.csv")
    checkpoint = read_checkpoint(checkpoints[0])  # weights_only: a checkpoint cannot run code
    datamodule = datamodule_record(checkpoint)
    dataset = str(datamodule["class_path"] or "unknown").rsplit(".", 1)[-1].removesuffix("DataModule")
    mode = datamodule["init_args"].get("label_mode")
    run = Run(folder, f"{dataset} ({mode})" if mode else dataset, run_settings(checkpoint))
    problems = report.parent / INPUT_PROBLEMS_CSV  # written by the test report when its input check said something
    if problems.is_file():
        with open(problems, newline="") as handle:
            run.flagged = list(dict.fromkeys(row["subject"] for row in csv.DictReader(handle)))
    return _read_scores(run, report, metric)


def _read_scores(run: Run, table: Path, metric: str = "dice") -> Run:
    """``run`` with the per-subject ``metric`` of a score table (``test/metrics.csv``,
    ``scores.csv``: the same columns) and their mean over structures per subject."""
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        if metric not in (reader.fieldnames or ()):
            raise DataError(f"{table}: no {metric} column (lesion-wise scores come from train.py test "
                            "--test_report.lesion_wise or evaluate.py --lesion-wise)")
        for row in reader:
            run.scores.setdefault(row["structure"], {})[row["subject"]] = float(row[metric])
    if run.scores:
        structures = list(run.scores)
        subjects = sorted(set.intersection(*(set(run.scores[k]) for k in structures)))
        run.scores[MEAN] = {s: _nanmean([run.scores[k][s] for k in structures]) for s in subjects}
    return run


def parse_scores(text: str) -> tuple[str, str | None, Path]:
    """``NAME[@DATASET]=FOLDER`` (``--scores``) -> ``(name, dataset or None, scores.csv)``."""
    label, equals, where = text.partition("=")
    name, _, dataset = label.partition("@")
    if not equals or not name or not where:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME[@DATASET]=FOLDER (nnU-Net=nnunet_scores/)")
    table = Path(where)
    return name, dataset or None, table if table.suffix == ".csv" else table / "scores.csv"


def load_scores(name: str, dataset: str | None, table: Path, runs: Sequence[Run], metric: str = "dice") -> Run:
    """A method trained elsewhere as a run of ``dataset`` (the runs' only one when not named), from
    ``evaluate.py``'s ``scores.csv``; it must score the structures the dataset's runs score."""
    if not table.is_file():
        raise DataError(f"{table}: not found (--scores {name}: the scores.csv evaluate.py wrote)")
    datasets = sorted({run.dataset for run in runs})
    if dataset is None and len(datasets) != 1:
        raise DataError(f"--scores {name}: say which dataset it scored, {name}@<dataset>=..., one of {datasets}")
    dataset = dataset or datasets[0]
    if dataset not in datasets:
        raise DataError(f"--scores {name}@{dataset}: no run of {dataset} to compare with; datasets: {datasets}")
    external = _read_scores(Run(table.parent, dataset, {NETWORK_KEY: name}, external=True), table, metric)
    theirs = sorted(s for s in external.scores if s != MEAN)
    ours = sorted({s for run in runs if run.dataset == dataset for s in run.scores if s != MEAN})
    if theirs != ours:
        raise DataError(f"{table}: scores {theirs}, the runs of {dataset} score {ours} (evaluate.py --dataset "
                        "must score the runs' structures)")
    return external


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _is_setting(key: str) -> bool:
    return not any(key == p or (p.endswith(".") and key.startswith(p)) or key.startswith(p + ".")
                   for p in NOT_SETTINGS)


def _varies(runs: Sequence[Run], key: str) -> bool:
    return len({json.dumps(r.settings.get(key), sort_keys=True, default=str) for r in runs}) > 1


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """Config keys whose value differs between the runs (what the comparison is about). A
    network's own options (``model.network_kwargs.*``) count only where they differ between runs
    of the same network: across networks they merely say which network it is."""
    keys = sorted({k for run in runs for k in run.settings if _is_setting(k)})
    by_network: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_network[run.network].append(run)
    return [k for k in keys if _varies(runs, k) and (
        not k.startswith(NETWORK_OPTIONS) or any(_varies(group, k) for group in by_network.values()))]


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def short_name(key: str) -> str:
    return key.removeprefix("model.").removeprefix("data.init_args.").replace("init_args.", "")


def group_label(run: Run, keys: Sequence[str]) -> str:
    """The network and the settings (other than seed and fold) that set the run apart; a method
    trained elsewhere, its name."""
    if run.external:
        return run.network
    extra = [f"{short_name(k)}={run.settings.get(k)}" for k in keys if k not in REPLICATE_KEYS and k != NETWORK_KEY]
    return " ".join([run.network, *extra])


def structures_of(runs: Sequence[Run]) -> list[str]:
    names = list(dict.fromkeys(s for run in runs for s in run.scores if s != MEAN))
    return [*names, MEAN]


def group_scores(runs: Sequence[Run], structure: str) -> dict[str, float]:
    """Per-subject DSC of a group: each subject's mean over the group's runs that scored it."""
    by_subject: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for subject, value in run.scores.get(structure, {}).items():
            by_subject[subject].append(value)
    return {subject: _nanmean(values) for subject, values in by_subject.items()}


def _interval(values: Sequence[float]) -> str:
    low, high = bootstrap_ci(values)
    return "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"


@dataclass
class Comparison:
    """Everything computed for the reports."""

    markdown: str
    run_rows: list[dict[str, Any]]
    test_rows: list[dict[str, Any]]
    boxplots: dict[str, dict[str, dict[str, list[float]]]]  # dataset -> structure -> group -> per-subject score
    metric: str = "dice"  # the compared score (:data:`METRICS`)


def compare(paths: Sequence[Path], scores: Sequence[tuple[str, str | None, Path]] = (), metric: str = "dice"
            ) -> Comparison:
    """Read every run below ``paths``, and the methods of ``scores`` (:func:`parse_scores`), and
    compute the tables of ``metric`` (:data:`METRICS`)."""
    if metric not in METRICS:
        raise DataError(f"metric {metric!r}: choose from {list(METRICS)}")
    title, higher_is_better = METRICS[metric]
    reports, set_aside = find_reports(paths)
    runs = [load_run(report, metric) for report in reports]
    if not runs:
        aside = f" (only {len(set_aside)} set aside below *{SET_ASIDE_SUFFIX}/ folders)" if set_aside else ""
        raise DataError(f"no test/metrics.csv under {[str(p) for p in paths]}{aside}: run train.py test first")
    runs += [load_scores(name, dataset, table, runs, metric) for name, dataset, table in scores]
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_dataset[run.dataset].append(run)
    lines: list[str] = []
    run_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    boxplots: dict[str, dict[str, dict[str, list[float]]]] = {}
    group_means: dict[str, dict[str, float]] = defaultdict(dict)  # group -> dataset -> mean DSC
    root = Path(paths[0])
    for dataset, members in sorted(by_dataset.items()):
        keys = differing_settings([run for run in members if not run.external])
        structures = structures_of(members)
        columns = [k for k in keys if k != NETWORK_KEY]
        counts = sorted({len(run.scores.get(MEAN, {})) for run in members})
        subjects = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        caveat = (f" With {subjects} subjects the bootstrap interval understates the uncertainty and no paired "
                  "test can be significant: more test subjects, not more decimals." if counts[0] < SMALL_SAMPLE else "")
        lines += [f"## {dataset}", "",
                  f"Runs: mean {title} over the {subjects} test subjects [95 % bootstrap CI over subjects].{caveat}",
                  "",
                  "| run | network | " + "".join(f"{short_name(k)} | " for k in columns)
                  + " | ".join(structures) + " |", "|---" * (2 + len(columns) + len(structures)) + "|"]
        for run in sorted(members, key=lambda r: str(r.folder)):
            name = str(run.folder.relative_to(root)) if run.folder.is_relative_to(root) else str(run.folder)
            values = {s: list(run.scores.get(s, {}).values()) for s in structures}
            cells = [f"{run.mean_score(s):.4f}{_interval(values[s])}" for s in structures]
            lines.append(f"| {name} | {run.network} | " + "".join(f"{_cell(run.settings.get(k))} | " for k in columns)
                         + " | ".join(cells) + " |")
            row = {"dataset": dataset, "run": name, "network": run.network,
                   **{short_name(k): run.settings.get(k) for k in columns}}
            for structure in structures:
                values = list(run.scores.get(structure, {}).values())
                low, high = bootstrap_ci(values)
                row.update({f"{structure}_{metric}": run.mean_score(structure), f"{structure}_ci_low": low,
                            f"{structure}_ci_high": high, f"{structure}_subjects": len(values)})
            run_rows.append(row)
        groups: dict[str, list[Run]] = defaultdict(list)
        for run in members:
            groups[group_label(run, keys)].append(run)
        lines += ["", "Groups (runs that differ only in seed or fold): mean ± std over runs [95 % CI over "
                  "subjects of the per-subject mean over runs].", "",
                  "| group | runs | " + " | ".join(structures) + " |", "|---" * (2 + len(structures)) + "|"]
        ranked = sorted(groups, key=lambda g: (-1 if higher_is_better else 1) * _nanmean(
            [r.mean_score(MEAN) for r in groups[g]]))  # the best first
        for label in ranked:
            cells = []
            for structure in structures:
                run_means = [r.mean_score(structure) for r in groups[label]]
                subjects = list(group_scores(groups[label], structure).values())
                cells.append(f"{_nanmean(run_means):.4f} ± {float(np.nanstd(run_means)):.4f}{_interval(subjects)}")
            group_means[label][dataset] = _nanmean([r.mean_score(MEAN) for r in groups[label]])
            lines.append(f"| {label} | {len(groups[label])} | " + " | ".join(cells) + " |")
        boxplots[dataset] = {s: {g: list(group_scores(groups[g], s).values()) for g in ranked} for s in structures}
        tests = paired_tests(dataset, groups, ranked, structures)
        test_rows += tests
        if tests:
            lines += ["", "Paired Wilcoxon signed-rank tests on the subjects both groups scored (Holm-adjusted over "
                      "the pairs of each structure).", "",
                      "| A | B | structure | subjects | mean A − B | p | p (Holm) |", "|---" * 7 + "|"]
            lines += [f"| {t['a']} | {t['b']} | {t['structure']} | {t['subjects']} | {t['mean_difference']:+.4f} | "
                      f"{t['p']:.4g} | {t['p_holm']:.4g} |" for t in tests]
        flagged = [run for run in members if run.flagged]
        if flagged:
            lines += ["", "Tested on scans unlike the training scans (the test's input check: modalities swapped, "
                      "another contrast, a background not at 0, another voxel size; those scores are not the "
                      f"models' on scans like their own; `test/{INPUT_PROBLEMS_CSV}` says what):", ""]
            lines += [f"- {run.folder.relative_to(root) if run.folder.is_relative_to(root) else run.folder}: "
                      f"{', '.join(run.flagged)}" for run in sorted(flagged, key=lambda r: str(r.folder))]
        lines.append("")
    datasets = sorted(by_dataset)
    lines += [f"## mean {title}, group x dataset", "", "| group | " + " | ".join(datasets) + " |",
              "|---|" + "---:|" * len(datasets)]
    for label in sorted(group_means):
        cells = [f"{group_means[label][d]:.4f}" if d in group_means[label] else "" for d in datasets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if set_aside:
        folders = sorted({str(next(f for f in r.parents if f.name.endswith(SET_ASIDE_SUFFIX))) for r in set_aside})
        runs_were = "1 run" if len(set_aside) == 1 else f"{len(set_aside)} runs"
        lines += ["", f"Left out: {runs_were} that `study.py --rerun-changed` set aside, run with a study's earlier "
                  f"settings (below {', '.join(folders)}; give such a folder to compare them)."]
    return Comparison("\n".join(lines) + "\n", run_rows, test_rows, boxplots, metric)


def paired_tests(dataset: str, groups: Mapping[str, Sequence[Run]], order: Sequence[str],
                 structures: Sequence[str]) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank test per pair of groups and structure, on their common subjects."""
    rows = []
    for structure in structures:
        found = []
        for a, b in combinations(order, 2):
            first, second = group_scores(groups[a], structure), group_scores(groups[b], structure)
            common = sorted(set(first) & set(second))
            if not common:
                continue
            x, y = [first[s] for s in common], [second[s] for s in common]
            found.append({"dataset": dataset, "a": a, "b": b, "structure": structure, "subjects": len(common),
                          "mean_difference": _nanmean([p - q for p, q in zip(x, y, strict=True)]),
                          "p": paired_wilcoxon(x, y)})
        for row, adjusted in zip(found, holm([r["p"] for r in found]), strict=True):
            row["p_holm"] = adjusted
        rows += found
    return rows


REPORTS = ("comparison.md", "comparison_runs.csv", "comparison_tests.csv", "comparison.png")  # write_reports writes
COMPARISON_RECORD = "comparison.json"  # beside them (compare_runs.py): which runs and scores, by which metric


def write_reports(comparison: Comparison, output: Path) -> list[Path]:
    """The :data:`REPORTS`: the Markdown table, the runs' and the tests' CSV, the box plots."""
    markdown, runs_csv, tests_csv, boxplots = REPORTS
    output.mkdir(parents=True, exist_ok=True)
    run_columns = list(dict.fromkeys(k for row in comparison.run_rows for k in row))
    written = [write_text_atomically(output / markdown, comparison.markdown),
               write_text_atomically(output / runs_csv, csv_text(comparison.run_rows, run_columns))]
    test_columns = ["dataset", "a", "b", "structure", "subjects", "mean_difference", "p", "p_holm"]
    written.append(write_text_atomically(output / tests_csv, csv_text(comparison.test_rows, test_columns)))
    written.append(save_score_boxplots(comparison.boxplots, output / boxplots,
                                       title=f"{METRICS[comparison.metric][0]} per subject"))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, or folders holding runs")
    parser.add_argument("--output", type=Path, help="where the reports go (default: the first folder given)")
    parser.add_argument("--scores", type=parse_scores, action="append", default=[], metavar="NAME[@DATASET]=FOLDER",
                        help="a method trained elsewhere, by the scores.csv evaluate.py wrote for its segmentations "
                             "of the runs' test subjects (repeatable)")
    parser.add_argument("--metric", choices=list(METRICS), default="dice",
                        help="the score compared: dice (default), hd95_mm, or lesion_dice and lesion_hd95_mm, the "
                             "lesion-wise scores BraTS ranks by")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace another comparison's reports (or files of their names) in --output")
    args = parser.parse_args(argv)
    output = args.output or args.runs[0]
    record = {"written_by": "compare_runs.py", "runs": [str(p.resolve()) for p in args.runs],
              "scores": [[name, dataset, str(Path(folder).resolve())] for name, dataset, folder in args.scores],
              "metric": args.metric}
    try:
        comparison = compare(args.runs, args.scores, args.metric)
        present, earlier = earlier_report(output, REPORTS, COMPARISON_RECORD)
        if present and not args.overwrite and earlier != record:  # the inputs' own errors said first
            ours = isinstance(earlier, dict) and earlier.get("written_by") == "compare_runs.py"
            what = (f"another comparison's reports (of {', '.join(earlier.get('runs', []))})" if ours
                    else f"{', '.join(present)}, not recorded as compare_runs.py's")
            raise DataError(f"{output}: holds {what}; refusing to replace them: choose another --output or pass "
                            "--overwrite")
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomically(output / COMPARISON_RECORD, json.dumps(record, indent=1))  # first, as evaluate.py
        written = write_reports(comparison, output)
    except (DataError, FileNotFoundError) as error:
        parser.exit(2, f"compare_runs.py: error: {error}\n")
    print(comparison.markdown, end="")
    print("written: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
