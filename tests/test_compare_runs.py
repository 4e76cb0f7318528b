from pathlib import Path

import pytest
import torch

from compare_runs import comparison_tables, main


def fake_run(folder: Path, network: str, datamodule: str, dice: dict[str, list[float]],
             mode: str | None = None) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "test").mkdir()
    torch.save({"state_dict": {}, "hyper_parameters": {"network": network},
                "datamodule_class": f"datamodules.{datamodule}",
                "datamodule_hyper_parameters": {"label_mode": mode} if mode else {}},
               folder / "checkpoints" / "best.ckpt")
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
    table = comparison_tables([tmp_path])
    assert "| unet3d | 0.8500 | 0.8500 | 0.8500 | 0.8500 |" in table  # ISeg2017 section: region means, mean
    assert "| vnet | 0.7000 | 0.8000 | 0.9000 | 0.8000 |" in table  # NaN (absent region) left out
    assert "| network | ISeg2017 | MRBrainS18 (thesis) |" in table
    assert "| unet3d | 0.8500 | 0.7000 |" in table and "| vnet | 0.8000 |  |" in table
    main([str(tmp_path / "iseg" / "unet3d")])
    assert "| unet3d | 0.8500" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nothing")])
