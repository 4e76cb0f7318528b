from pathlib import Path

import nibabel as nib
import numpy as np

from demo.synthetic_iseg import SynthesisSettings, build_dataset


def test_demo_data_is_in_the_iseg_layout_with_realistic_contrast(tiny_demo_dir: Path) -> None:
    for n in range(1, 5):
        for part in ("T1", "T2", "label"):
            assert (tiny_demo_dir / f"subject-{n}-{part}.hdr").is_file()
            assert (tiny_demo_dir / f"subject-{n}-{part}.img").is_file()
    t1 = nib.load(str(tiny_demo_dir / "subject-1-T1.hdr"))
    label = np.asarray(nib.load(str(tiny_demo_dir / "subject-1-label.hdr")).dataobj)
    assert t1.get_data_dtype() == np.int16 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 10, 150, 250}
    t1 = np.asarray(t1.dataobj, dtype=float)
    t2 = np.asarray(nib.load(str(tiny_demo_dir / "subject-1-T2.hdr")).dataobj, dtype=float)
    means = {v: (t1[label == v].mean(), t2[label == v].mean()) for v in (10, 150, 250)}
    assert means[10][0] < means[150][0] < means[250][0]   # T1w: CSF dark, WM bright
    assert means[10][1] > means[150][1] > means[250][1]   # T2w: CSF bright, WM dark
    assert (t1[label == 0] == 0).all()                      # skull-stripped background


def test_demo_data_is_deterministic_and_cached(tmp_path: Path, tiny_demo_dir: Path) -> None:
    settings = SynthesisSettings(subjects=4, seed=3, spacing=6.0)
    again = build_dataset(tmp_path / "again", settings)
    for name in ("subject-2-T1.img", "subject-2-label.img"):
        assert (again / name).read_bytes() == (tiny_demo_dir / name).read_bytes()
    stamp = (again / "subject-1-T1.img").stat().st_mtime_ns
    build_dataset(again, settings)  # same settings: reused, not rewritten
    assert (again / "subject-1-T1.img").stat().st_mtime_ns == stamp
    other = build_dataset(tmp_path / "other", SynthesisSettings(subjects=2, seed=4, spacing=6.0))  # subject-2 is enough
    assert (other / "subject-2-T1.img").read_bytes() != (again / "subject-2-T1.img").read_bytes()
