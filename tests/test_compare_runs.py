"""compare_runs.py: every run kept, groups over seeds, bootstrap intervals and paired tests."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from compare_runs import compare, main
from core.io import DataError


def fake_run(folder: Path, network: str, datamodule: str, dice: dict[str, list[float]],
             mode: str | None = None, config: dict | None = None) -> None:
    """A run folder as train.py leaves it: a checkpoint (old style without ``config``, else with a
    run record) and test/metrics.csv with subjects s0, s1, ..."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "test").mkdir()
    checkpoint = {"state_dict": {}, "hyper_parameters": {"network": network},
                  "datamodule_class": f"datamodules.{datamodule}",
                  "datamodule_hyper_parameters": {"label_mode": mode} if mode else {}}
    if config is not None:
        checkpoint["run_record"] = {"config": config, "command": ["fit"], "code": {"commit": None, "dirty": None}}
    torch.save(checkpoint, folder / "checkpoints" / "best.ckpt")
    rows = ["subject,structure,dice,hd95_mm,assd_mm,avd_percent"]
    for region, values in dice.items():
        rows += [f"s{i},{region},{v},1.0,0.5,2.0" for i, v in enumerate(values)]
    (folder / "test" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_thesis_table_from_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path / "iseg" / "unet3d", "unet3d", "ISeg2017DataModule",
             {"CSF": [0.9, 0.8], "GM": [0.85, 0.85], "WM": [0.8, 0.9]})
    fake_run(tmp_path / "iseg" / "vnet", "vnet", "ISeg2017DataModule",
             {"CSF": [0.7, 0.7], "GM": [0.8, 0.8], "WM": [0.9, float("nan")]})
    fake_run(tmp_path / "mrb" / "unet3d", "unet3d", "MRBrainS18DataModule", {"CSF": [0.6], "GM": [0.7], "WM": [0.8]},
             mode="thesis")
    (tmp_path / "iseg" / "vnet" / "test" / "input_problems.csv").write_text(
        "subject,problem\ns1,input channel 0 (given as T1) has 0.0% of its voxels at 0\n")
    table = compare([tmp_path]).markdown
    # Runs: the mean over subjects per structure with its bootstrap interval, then the mean of those.
    assert re.search(r"\| iseg/unet3d \| unet3d \| 0\.8500 \[0\.800, 0\.900\] \| 0\.8500 \[0\.850, 0\.850\] \| "
                     r"0\.8500 \[0\.800, 0\.900\] \| 0\.8500 ", table)
    assert ("| iseg/vnet | vnet | 0.7000 [0.700, 0.700] | 0.8000 [0.800, 0.800] | 0.9000 [0.900, 0.900] | 0.8000"
            in table)
    # One run per group: std 0.
    assert "| unet3d | 1 | 0.8500 ± 0.0000 [0.800, 0.900] |" in table
    assert "| group | ISeg2017 | MRBrainS18 (thesis) |" in table
    assert "| unet3d | 0.8500 | 0.7000 |" in table and "| vnet | 0.8000 |  |" in table
    # A run whose test said something of its inputs is named, with the subjects, under its dataset only
    iseg, mrb = table.split("## MRBrainS18")[0], table.split("## MRBrainS18")[1]
    assert "Tested on scans unlike the training scans (the test's input check" in iseg
    assert "\n- iseg/vnet: s1\n" in iseg and "Tested on scans unlike" not in mrb
    main([str(tmp_path / "iseg" / "unet3d")])
    assert "| unet3d | 0.8500" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nothing")])


def config(network: str, seed: int, lr: float = 0.003) -> dict:
    return {"seed_everything": seed, "model": {"network": network, "optimizer": {"init_args": {"lr": lr}}},
            "data": {"init_args": {"data_dir": f"/data/{seed}", "patch_size": [48, 48, 48]}},
            "checkpoint": {"dirpath": f"runs/{network}/{seed}"}}


def test_seeds_are_kept_grouped_and_compared_subject_by_subject(tmp_path: Path) -> None:
    """Two seeds of two networks on the same 6 subjects: 4 runs (none dropped), 2 groups, the seed
    as the only differing setting, and a Wilcoxon test on the groups' per-subject means."""
    rng = np.random.default_rng(0)
    unet = {seed: rng.uniform(0.85, 0.95, 6) for seed in (0, 1)}
    vnet = {seed: rng.uniform(0.60, 0.70, 6) for seed in (0, 1)}
    for seed in (0, 1):
        fake_run(tmp_path / f"unet3d-{seed}", "unet3d", "ISeg2017DataModule", {"WM": list(unet[seed])},
                 config=config("unet3d", seed))
        fake_run(tmp_path / f"vnet-{seed}", "vnet", "ISeg2017DataModule", {"WM": list(vnet[seed])},
                 config=config("vnet", seed))
    comparison = compare([tmp_path])
    assert [row["run"] for row in comparison.run_rows] == ["unet3d-0", "unet3d-1", "vnet-0", "vnet-1"]
    assert {k for k in comparison.run_rows[0] if not k.startswith(("WM", "mean"))} == {
        "dataset", "run", "network", "seed_everything"}  # paths (data_dir, dirpath) are not settings
    assert comparison.run_rows[1]["WM_dice"] == pytest.approx(unet[1].mean())
    unet_mean = (unet[0] + unet[1]) / 2
    table = comparison.markdown
    run_means = [unet[0].mean(), unet[1].mean()]
    assert f"| unet3d | 2 | {np.mean(run_means):.4f} ± {np.std(run_means):.4f} [" in table
    (wm,) = [t for t in comparison.test_rows if t["structure"] == "WM"]
    assert (wm["a"], wm["b"], wm["subjects"]) == ("unet3d", "vnet", 6)
    vnet_mean = (vnet[0] + vnet[1]) / 2
    assert wm["p"] == pytest.approx(stats.wilcoxon(unet_mean - vnet_mean).pvalue) == pytest.approx(2 / 64)
    assert wm["mean_difference"] == pytest.approx((unet_mean - vnet_mean).mean())
    assert wm["p_holm"] == pytest.approx(wm["p"])  # one pair: nothing to adjust
    assert "| unet3d | vnet | WM | 6 | +" in table


def test_runs_a_study_set_aside_are_left_out_of_a_comparison_of_its_parent_and_said(tmp_path: Path) -> None:
    """``study.py --rerun-changed`` moves cells of a study's old definition to
    ``<study>.replaced/<time>/``: comparing the folder above the study finds them, and leaves them
    out with a line saying so; given explicitly, such a folder is compared as any other."""
    fake_run(tmp_path / "thesis" / "unet3d", "unet3d", "ISeg2017DataModule", {"GM": [0.9, 0.8]},
             config=config("unet3d", 0))
    old = tmp_path / "thesis.replaced" / "20261205-120000"
    fake_run(old / "unet3d", "unet3d", "ISeg2017DataModule", {"GM": [0.1, 0.2]}, config=config("unet3d", 0, lr=0.1))
    comparison = compare([tmp_path])
    assert [row["run"] for row in comparison.run_rows] == ["thesis/unet3d"]
    assert comparison.markdown.rstrip().endswith(
        f"Left out: 1 run that `study.py --rerun-changed` set aside, run with a study's earlier settings (below "
        f"{tmp_path / 'thesis.replaced'}; give such a folder to compare them).")
    assert [row["run"] for row in compare([old]).run_rows] == ["unet3d"]
    assert "Left out" not in compare([old]).markdown and "Left out" not in compare([tmp_path / "thesis"]).markdown
    fake_run(tmp_path / "only" / "s.replaced" / "t" / "r", "vnet", "ISeg2017DataModule", {"GM": [0.5]})
    with pytest.raises(DataError, match=r"no test/metrics\.csv under .* \(only 1 set aside below \*\.replaced/ "
                                        r"folders\): run train\.py test first"):
        compare([tmp_path / "only"])


def test_the_cli_writes_markdown_csv_and_box_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for network, values in (("unet3d", [0.9, 0.8, 0.85]), ("vnet", [0.7, 0.75, 0.6]), ("vnet", [0.72, 0.7, 0.65])):
        seed = len(list(tmp_path.glob(f"{network}-*")))
        fake_run(tmp_path / f"{network}-{seed}", network, "ISeg2017DataModule", {"GM": values},
                 config=config(network, seed))
    out = tmp_path / "report"
    main([str(tmp_path), "--output", str(out)])
    assert (out / "comparison.md").read_text() in capsys.readouterr().out
    with open(out / "comparison_runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 3 and float(runs[0]["GM_dice"]) == pytest.approx(0.85)
    assert float(runs[0]["GM_ci_low"]) <= 0.85 <= float(runs[0]["GM_ci_high"])
    with open(out / "comparison_tests.csv") as handle:
        tests = list(csv.DictReader(handle))
    assert [(t["a"], t["b"], t["structure"]) for t in tests] == [("unet3d", "vnet", "GM"), ("unet3d", "vnet", "mean")]
    assert (out / "comparison.png").stat().st_size > 10_000
    # comparison.json says what was compared: the same comparison again replaces its own reports,
    # another (other runs, another metric) is refused, unless --overwrite.
    assert json.loads((out / "comparison.json").read_text())["runs"] == [str(tmp_path.resolve())]
    reports = {p.name: p.read_bytes() for p in out.iterdir()}
    main([str(tmp_path), "--output", str(out)])
    capsys.readouterr()
    for other in ([str(tmp_path / "unet3d-0"), str(tmp_path / "vnet-0")], [str(tmp_path), "--metric", "hd95_mm"]):
        with pytest.raises(SystemExit) as exited:
            main([*other, "--output", str(out)])
        assert exited.value.code == 2 and capsys.readouterr().err == (
            f"compare_runs.py: error: {out}: holds another comparison's reports (of {tmp_path.resolve()}); refusing "
            "to replace them: choose another --output or pass --overwrite\n")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".png"} == {
        k: v for k, v in reports.items() if not k.endswith(".png")}
    main([str(tmp_path / "unet3d-0"), str(tmp_path / "vnet-0"), "--output", str(out), "--overwrite"])
    assert len(json.loads((out / "comparison.json").read_text())["runs"]) == 2


def test_a_networks_own_options_are_not_settings_unless_they_vary_within_it(tmp_path: Path) -> None:
    """U-Net's base_features and SegResNet's init_filters only say which network a run is; a
    base_features that differs between two U-Net runs is what those runs compare."""
    def with_options(network: str, seed: int, **options: int) -> dict:
        cfg = config(network, seed)
        cfg["model"]["network_kwargs"] = options
        return cfg

    fake_run(tmp_path / "a", "unet3d", "ISeg2017DataModule", {"GM": [0.8]},
             config=with_options("unet3d", 0, base_features=8))
    fake_run(tmp_path / "b", "segresnet", "ISeg2017DataModule", {"GM": [0.7]},
             config=with_options("segresnet", 0, init_filters=8))
    assert {k for k in compare([tmp_path]).run_rows[0] if not k.startswith(("GM", "mean"))} == {
        "dataset", "run", "network"}
    fake_run(tmp_path / "c", "unet3d", "ISeg2017DataModule", {"GM": [0.9]},
             config=with_options("unet3d", 0, base_features=16))
    comparison = compare([tmp_path])
    assert "network_kwargs.base_features" in comparison.run_rows[0]
    assert "| unet3d network_kwargs.base_features=16 | 1 |" in comparison.markdown


def test_another_methods_scores_join_the_tables_and_the_paired_tests(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--scores nnU-Net=<folder>``: evaluate.py's scores.csv for another method's segmentations of
    the same test subjects is a group of its own, compared subject by subject with the runs."""
    rng = np.random.default_rng(1)
    unet = {seed: rng.uniform(0.80, 0.90, 6) for seed in (0, 1)}
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / f"unet3d-{seed}", "unet3d", "ISeg2017DataModule", {"WM": list(unet[seed])},
                 config=config("unet3d", seed))
    theirs = rng.uniform(0.90, 0.95, 6)
    scores = tmp_path / "nnunet_scores"
    scores.mkdir()
    (scores / "scores.csv").write_text("subject,structure,dice,hd95_mm\n"
                                       + "".join(f"s{i},WM,{v},1.0\n" for i, v in enumerate(theirs)))
    out = tmp_path / "report"
    main([str(tmp_path / "runs"), "--scores", f"nnU-Net={scores}", "--output", str(out)])
    table = (out / "comparison.md").read_text()
    assert f"| nnU-Net | 1 | {theirs.mean():.4f} ± 0.0000 [" in table  # its own group, named as given
    assert "| unet3d | 2 |" in table and "seed_everything" in table  # the runs' settings, as before
    (wm,) = [t for t in compare([tmp_path / "runs"], [("nnU-Net", None, scores / "scores.csv")]).test_rows
             if t["structure"] == "WM"]
    unet_mean = (unet[0] + unet[1]) / 2
    assert (wm["a"], wm["b"], wm["subjects"]) == ("nnU-Net", "unet3d", 6)  # ranked by mean DSC
    assert wm["p"] == pytest.approx(stats.wilcoxon(theirs - unet_mean).pvalue)
    assert wm["mean_difference"] == pytest.approx((theirs - unet_mean).mean())
    capsys.readouterr()
    refused = [
        (f"nnU-Net@MRBrainS18={scores}", "--scores nnU-Net@MRBrainS18: no run of MRBrainS18 to compare with; "
                                          "datasets: ['ISeg2017']"),
        (f"nnU-Net={tmp_path / 'nowhere'}", "nowhere/scores.csv: not found (--scores nnU-Net: the scores.csv "
                                            "evaluate.py wrote)"),
        ("nnU-Net", "argument --scores: 'nnU-Net' is not NAME[@DATASET]=FOLDER")]
    (tmp_path / "gm").mkdir()
    (tmp_path / "gm" / "scores.csv").write_text("subject,structure,dice\ns0,GM,0.9\n")
    refused.append((f"x={tmp_path / 'gm'}", "gm/scores.csv: scores ['GM'], the runs of ISeg2017 score ['WM']"))
    for spec, said in refused:
        with pytest.raises(SystemExit) as exited:
            main([str(tmp_path / "runs"), "--scores", spec, "--output", str(out)])
        assert exited.value.code == 2 and said in capsys.readouterr().err, spec


def test_runs_compared_by_the_lesion_wise_dice_brats_ranks_by(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--metric lesion_dice``: the tables, the paired tests and the box plots of the lesion-wise
    Dice column (``--test_report.lesion_wise`` / ``evaluate.py --lesion-wise``), not of the DSC;
    a distance ranks the lowest first; a report without the column is one line."""
    rng = np.random.default_rng(2)
    lesion = {name: rng.uniform(low, low + 0.1, 5) for name, low in (("unet3d", 0.6), ("segresnet", 0.8))}
    for name, values in lesion.items():
        folder = tmp_path / "runs" / name
        fake_run(folder, name, "BraTSDataModule", {"ET": [0.9] * 5}, config=config(name, 0))
        rows = (folder / "test" / "metrics.csv").read_text().splitlines()
        (folder / "test" / "metrics.csv").write_text("\n".join(
            [rows[0] + ",lesion_dice", *(f"{row},{v}" for row, v in zip(rows[1:], values, strict=True))]) + "\n")
    out = tmp_path / "report"
    main([str(tmp_path / "runs"), "--metric", "lesion_dice", "--output", str(out)])
    table = (out / "comparison.md").read_text()
    assert "Runs: mean lesion-wise DSC over the 5 test subjects" in table and "## mean lesion-wise DSC" in table
    assert f"| segresnet | 1 | {lesion['segresnet'].mean():.4f} ± 0.0000 [" in table  # ranked first
    (et,) = [t for t in compare([tmp_path / "runs"], metric="lesion_dice").test_rows if t["structure"] == "ET"]
    assert (et["a"], et["b"]) == ("segresnet", "unet3d")
    assert et["mean_difference"] == pytest.approx((lesion["segresnet"] - lesion["unet3d"]).mean())
    assert et["p"] == pytest.approx(stats.wilcoxon(lesion["segresnet"] - lesion["unet3d"]).pvalue)
    runs_csv = (out / "comparison_runs.csv").read_text()
    assert "ET_lesion_dice" in runs_csv.splitlines()[0]
    assert compare([tmp_path / "runs"]).test_rows[0]["mean_difference"] == 0.0  # by the DSC: equal
    # A distance: the lower the better, so the group of the smaller HD95 comes first.
    for name, hd95 in (("unet3d", 3.0), ("segresnet", 5.0)):
        table = tmp_path / "runs" / name / "test" / "metrics.csv"
        table.write_text(table.read_text().replace(",1.0,0.5,2.0,", f",{hd95},0.5,2.0,"))
    (hd,) = [t for t in compare([tmp_path / "runs"], metric="hd95_mm").test_rows if t["structure"] == "ET"]
    assert (hd["a"], hd["b"], hd["mean_difference"]) == ("unet3d", "segresnet", -2.0)
    capsys.readouterr()
    (tmp_path / "runs" / "unet3d" / "test" / "metrics.csv").write_text("subject,structure,dice\ns0,ET,0.9\n")
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "runs"), "--metric", "lesion_dice", "--output", str(out)])
    assert exited.value.code == 2 and ("unet3d/test/metrics.csv: no lesion_dice column (lesion-wise scores come "
                                       "from train.py test --test_report.lesion_wise" in capsys.readouterr().err)
