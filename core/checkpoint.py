"""The checkpoint format: what a checkpoint of this codebase holds, under which key, and how
one is read (safely, and in today's form whatever version wrote it).

Lightning writes ``state_dict`` and ``hyper_parameters``; the LightningModule and callbacks add
the keys below. Every reader and writer names a key by its constant here, never by a string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from core.io import DataError, atomic_path, file_sha256
from core.labels import LabelSpace

STATE_DICT = "state_dict"  # Lightning: the module's tensors (the network's under "network.")
HYPER_PARAMETERS = "hyper_parameters"  # Lightning: the LightningModule's constructor arguments
DATAMODULE_ARGS = "datamodule_hyper_parameters"  # Lightning: the DataModule's constructor arguments
DATAMODULE_CLASS = "datamodule_class"  # ours: the DataModule's import path, to read new scans its way
MODALITY_PROFILES = "modality_profiles"  # ours: intensity profile per training modality (core.modality_profiles)
TRAINING_SPACING = "training_spacing"  # ours: the training volumes' voxel spacing range (core.training_spacing)
RUN_RECORD = "run_record"  # ours: the run's full config, command and code version (train.py)
WANDB_RUN_ID = "wandb_run_id"  # ours: the W&B run that wrote it, so resume and test log into that run
LIGHTNING_VERSION = "pytorch-lightning_version"  # Lightning: the version that wrote it (its migrations)
NETWORK_PREFIX = "network."  # the network's weights inside STATE_DICT

LAST = "last.ckpt"  # the checkpoint folder's latest state (lightning_modules.callbacks.RunCheckpoint)
HPC_PATTERN = "hpc_ckpt_*.ckpt"  # Lightning's state saved on SLURM's preemption signal, in the run folder

LEGACY_LABEL_ARGS = ("num_classes", "class_names", "label_values", "regions", "region_names")
# Optimiser settings of checkpoints written when they were strings and numbers; today the
# optimiser and schedule are classes recorded in the run's config, not in the checkpoint.
LEGACY_OPTIMIZER_ARGS = ("optimizer", "lr", "weight_decay", "momentum", "lr_schedule")


def newest_checkpoint(folder: Path, checkpoint_dir: str | Path) -> Path | None:
    """The latest state of a run: Lightning's SLURM checkpoint (written on SIGUSR1 into the run
    folder, the fit's ``default_root_dir``) or ``last.ckpt``, whichever was written last."""
    candidates = [*Path(folder).glob(HPC_PATTERN), *Path(checkpoint_dir).glob(LAST)]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)


def recorded_path(source: str | Path) -> str:
    """A checkpoint as a log of the runs it served records it: absolute, symbolic links
    resolved (``runs/x/latest/...`` names another run once the next fit starts; one file given
    relatively and absolutely is one model). What is not a file (a model in memory) stays as given."""
    path = Path(source)
    return str(path.resolve()) if path.is_file() else str(source)


def checkpoint_identity(source: str | Path) -> dict[str, str]:
    """How a prediction run names its model: the checkpoint's path (:func:`recorded_path`) and,
    for a file, the SHA-256 of its bytes: the same weights wherever the file was moved or copied,
    other weights when a file of that name was written again."""
    path = Path(source)
    if not path.is_file():
        return {"checkpoint": str(source)}
    return {"checkpoint": recorded_path(path), "checkpoint_sha256": file_sha256(path)}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, loaded with ``weights_only=True`` (a file carrying
    pickled code is refused, never run); unreadable files raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        # Memory-mapped: reading the hyperparameters of a large checkpoint costs no tensor reads.
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated zip, pickle payload refused by the safe unpickler, ...
        raise DataError(f"{path}: cannot read the checkpoint ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(checkpoint, dict) or STATE_DICT not in checkpoint or HYPER_PARAMETERS not in checkpoint:
        raise DataError(f"{path}: not a checkpoint of this codebase (no {STATE_DICT} / {HYPER_PARAMETERS})")
    return checkpoint


def model_hparams(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The model's arguments as stored in ``checkpoint``, in today's form: the label space
    whole under ``label_space`` (older checkpoints' separate label arguments folded into it),
    older checkpoints' optimiser strings left out."""
    hparams = {k: v for k, v in checkpoint[HYPER_PARAMETERS].items() if not k.startswith("_")}
    if not hparams.get("label_space"):
        legacy = {k: hparams.get(k) for k in LEGACY_LABEL_ARGS} | {"num_classes": hparams.get("num_classes") or 2}
        hparams["label_space"] = LabelSpace.from_legacy(**legacy).to_dict()
    return {k: v for k, v in hparams.items() if k not in (*LEGACY_LABEL_ARGS, *LEGACY_OPTIMIZER_ARGS)}


def network_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's tensors, keyed as the network itself names them."""
    return {k.removeprefix(NETWORK_PREFIX): v for k, v in checkpoint[STATE_DICT].items()
            if k.startswith(NETWORK_PREFIX)}


def network_checkpoint(network: torch.nn.Module, name: str, network_kwargs: Mapping[str, Any],
                       modalities: Sequence[str], label_space: LabelSpace) -> dict[str, Any]:
    """A checkpoint of this format in memory, as :func:`read_checkpoint` returns one, for a
    network alone (registered as ``name``): what fine-tuning reads of one (the benchmarks' and
    tests' stand-ins for a trained model)."""
    return {STATE_DICT: {f"{NETWORK_PREFIX}{k}": v.detach().clone() for k, v in network.state_dict().items()},
            HYPER_PARAMETERS: {"network": name, "network_kwargs": dict(network_kwargs),
                               "modalities": list(modalities), "label_space": label_space.to_dict()}}


def datamodule_record(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The training DataModule: ``class_path`` and ``init_args`` (how folders of its layout are
    read and scans preprocessed)."""
    return {"class_path": checkpoint.get(DATAMODULE_CLASS), "init_args": dict(checkpoint.get(DATAMODULE_ARGS) or {})}


def write_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], hyper_parameters: Mapping[str, Any],
                     datamodule_class: str, datamodule_args: Mapping[str, Any]) -> Path:
    """A checkpoint of this format from a model's tensors and arguments, without a fit (the
    benchmarks' untrained models), written atomically; ``SegmentationModule.load_from_checkpoint``
    and :func:`read_checkpoint` read it like a trained one."""
    checkpoint = {STATE_DICT: dict(state_dict), HYPER_PARAMETERS: dict(hyper_parameters),
                  LIGHTNING_VERSION: version("pytorch-lightning"), DATAMODULE_CLASS: datamodule_class,
                  DATAMODULE_ARGS: dict(datamodule_args)}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)
