"""Fixtures that write small datasets in the real on-disk layouts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker computes on its share of the
    cores, and so do the processes its tests start (``OMP_NUM_THREADS``): two workers of two
    threads each on two cores ran the suite slower than one worker (283 s against 250 s); two
    of one thread each, 178 s."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


share_the_cores_between_workers()


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, Lightning's ``PossibleUserWarning`` hints (about the tiny test
    fits' batch counts and loaders) are not recorded: the controller rebuilds every recorded
    warning from its class, and importing Lightning's warning module there took 4.7 s of the
    two cores, beside the workers. The workers import Lightning anyway."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        config.addinivalue_line("filterwarnings", "ignore::lightning_fabric.utilities.warnings.PossibleUserWarning")


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by shared fixtures; the sort is stable
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow`` tests (processes of their own, 15-25 s each) run first: pytest-xdist hands each
    worker the next test as it runs low, so the suite no longer ends on one of them while the
    other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


ISEG_VALUES = (0, 10, 150, 250)
SCRATCH = {".pytest_cache", "__pycache__", ".ruff_cache"}


def _root_entries() -> set[str]:
    return {p.name for p in ROOT.iterdir()} - SCRATCH


@pytest.fixture(autouse=True, scope="session")
def float32_training() -> Iterator[None]:
    """Tests compare figures to the digit across paths (train.py test against evaluate.py, train.py
    predict against predict.py, one process against DDP): every fit trains in float32 unless a test
    asks otherwise, also on a CPU with native bf16, where the Trainer's default is bf16-mixed
    (``default_precision`` has a test of its own)."""
    import lightning_modules.trainer as trainer

    real = trainer.fast_bf16
    trainer.fast_bf16 = lambda device: False  # the Trainer's default sees no native bf16
    yield
    trainer.fast_bf16 = real


@pytest.fixture(autouse=True, scope="session")
def child_temporary_files_under_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Processes the tests start (study cells, DDP ranks, SLURM tasks) keep their temporary files
    in the session's pytest folder, which pytest prunes: a task the tests end as SLURM does
    (SIGTERM) never runs its exit handlers, and W&B's import-time ``wandb-media`` and
    ``wandb-artifacts`` folders were left in the system's temporary folder, two per killed task."""
    folder = tmp_path_factory.mktemp("child_tmp")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    yield
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(autouse=True)
def repository_root_untouched() -> Iterator[None]:
    """Tests write into their tmp folders only: a file a test leaves in the repository (a config or
    split saved into the working directory) fails that test, by name."""
    before = _root_entries()
    yield
    left = sorted(_root_entries() - before)
    assert not left, f"the test left files in the repository root: {left}"


@pytest.fixture(autouse=True)
def threads_restored() -> Iterator[None]:
    """A command run in-process may set torch's thread count (``predict.py --threads``, ``--cpu-fast``:
    every core); the worker's share of the cores comes back after the test."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_analyze(array: np.ndarray, path: Path, zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    image = nib.AnalyzeImage(array, affine=np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    nib.save(image, str(path))


def iseg_label(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A blocky iSeg label map (values 0/10/150/250): background border, three tissue slabs."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.uint8)
    d = shape[0]
    inner = (slice(2, d - 2), slice(2, shape[1] - 2), slice(2, shape[2] - 2))
    label[inner] = 150
    label[2 : d // 3, 2 : shape[1] - 2, 2 : shape[2] - 2] = 10
    label[2 * d // 3 : d - 2, 2 : shape[1] - 2, 2 : shape[2] - 2] = 250
    flip = rng.random(shape) < 0.02
    label[flip & (label > 0)] = 150
    return label


def write_iseg_subject(folder: Path, n: int, shape: tuple[int, int, int] = (16, 20, 24), seed: int = 0,
                       zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
    """Write ``subject-n-{T1,T2,label}.hdr/.img``: T1 bright in WM, T2 bright in CSF (int16)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + n)
    label = iseg_label(shape, seed + n)
    t1_means = {0: 0, 10: 300, 150: 600, 250: 900}
    t2_means = {0: 0, 10: 900, 150: 600, 250: 400}
    arrays = {"label": label}
    for name, means in (("T1", t1_means), ("T2", t2_means)):
        image = np.zeros(shape, dtype=np.float32)
        for value, mean in means.items():
            image[label == value] = mean
        image[label > 0] += rng.normal(0, 20, size=int((label > 0).sum()))
        arrays[name] = np.clip(image, 0, None).astype(np.int16)
    for name, array in arrays.items():
        write_analyze(array, folder / f"subject-{n}-{name}.hdr", zooms)
    return arrays


@pytest.fixture
def iseg_dir(tmp_path: Path) -> Path:
    """Five labelled iSeg subjects numbered 1, 2, 3, 4, 10 (10 sorts before 2 as a string)."""
    folder = tmp_path / "iSeg-2017-Training"
    for n in (1, 2, 3, 4, 10):
        write_iseg_subject(folder, n)
    return folder


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-subject synthetic demo dataset at 6 mm (small volumes, real template anatomy)."""
    from demo.synthetic_iseg import SynthesisSettings, build_dataset

    out = tmp_path_factory.mktemp("demo") / "iSeg-2017-Training"
    return build_dataset(out, SynthesisSettings(subjects=4, seed=3, spacing=6.0))


def csv_logger(run_dir: Path) -> list[str]:
    """Lightning's CSV logger under ``run_dir/logs``, as ``train.py`` arguments."""
    return ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(run_dir / "logs")]


def tiny_run_args(subcommand: str, data_dir: Path, run_dir: Path | None = None, *extra: str,
                  val: str = "[subject-3]", test: str = "[subject-4]",
                  logger: Sequence[str] | None = None) -> list[str]:
    """``train.py <subcommand>`` arguments for the tiny demo set: the demo recipe on a 2-feature
    U-Net and 16^3 patches, no progress bar, no logger (or ``logger``'s arguments), and with a
    ``run_dir``: its cache, checkpoints and saved config there (else no cache). The one place tests spell them."""
    args = [subcommand, "--config", "configs/demo.yaml", "--data.init_args.data_dir", str(data_dir),
            "--data.init_args.val_subjects", val, "--data.init_args.test_subjects", test,
            "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.samples_per_volume", "2",
            "--data.init_args.cache_dir", str(run_dir / "cache") if run_dir else "null",
            "--model.network_kwargs", "{base_features: 2}",
            *(["--trainer.logger", "false"] if logger is None else logger), "--trainer.enable_progress_bar", "false",
            "--trainer.precision", "32-true"]  # also in train.py processes the tests start (float32_training)
    if run_dir is not None:
        args += ["--checkpoint.dirpath", str(run_dir / "checkpoints"), "--trainer.default_root_dir", str(run_dir)]
    return [*args, *extra]


@pytest.fixture(scope="session")
def trained_run(tiny_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One run folder shared by every test that only needs *a* trained model: a one-epoch fit of
    the tiny demo set (validation subject-3, test subject-4) with CSV logs under ``logs/``,
    ``checkpoints/{best,last}.ckpt``, learning curves and the cache. Tests must not change it:
    a file one of them adds (a test report beside the checkpoint) or writes again (the learning
    curves, redrawn by a ``validate`` of the checkpoint) fails the session's end."""
    from train import run_cli

    run_dir = tmp_path_factory.mktemp("trained_run")
    run_cli(tiny_run_args("fit", tiny_demo_dir, run_dir, "--trainer.max_epochs", "1",
                          "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
                          logger=csv_logger(run_dir)), save_config=False)
    def state() -> dict[Path, tuple[int, int] | None]:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in run_dir.rglob("*")}

    written = state()
    yield run_dir
    now = state()
    added = sorted(str(p.relative_to(run_dir)) for p in set(now) - set(written))
    assert not added, f"tests wrote into the shared trained run: {added}"
    changed = sorted(str(p.relative_to(run_dir)) for p in written if now.get(p) != written[p])
    assert not changed, f"tests changed or removed files of the shared trained run: {changed}"


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    """The shared run's ``last.ckpt``."""
    return trained_run / "checkpoints" / "last.ckpt"
