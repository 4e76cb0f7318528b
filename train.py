"""LightningCLI entry point: ``python train.py {fit,validate,test,predict} --config <yaml>``.

W&B logs offline under ``runs/`` unless the environment says otherwise
(``WANDB_MODE=online`` with a key logs live; ``wandb sync`` uploads offline runs later).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from core.checkpoint import WANDB_RUN_ID, model_hparams, read_checkpoint
from core.io import DataError, DataWarning, one_line_warnings, unused_path, write_text_atomically
from core.labels import LabelSpace
from core.modality_profiles import ANY_CONTRAST
from core.provenance import code_version
from datamodules import VolumeSegmentationDataModule
from lightning_modules import SegmentationModule
from lightning_modules.callbacks import (
    LearningCurves,
    ResumeState,
    RunCheckpoint,
    SegmentationWriter,
    TestReport,
    ValidationImages,
)
from lightning_modules.loggers import MONITORED, HParamsMetric, RunLogger
from lightning_modules.presets import CONFIG_DIR, SUBCOMMANDS, check_command_line
from lightning_modules.run_folders import RunFolder, choose_run_folder, latest_target, link_latest, take_back_run
from lightning_modules.trainer import Trainer
from networks import check_network_options
from networks.checks import input_size_problem

ROOT = Path(__file__).resolve().parent
TRAINER_DEFAULTS = CONFIG_DIR / "trainer" / "default.yaml"  # loaded before any --config
# A parsed config dumped into a dict: parsing validated it already (validating again was two
# thirds of the dump's time), and JSON reads back the same dict as YAML, faster.
PARSED_DUMP = {"skip_validation": True, "format": "json"}


class RunConfigSaver(SaveConfigCallback):
    """Saves the run's full config and its data split (``split.json``: subject ids per role
    and the rule that chose them) beside each logger's files (the W&B run folder, which
    ``wandb sync`` uploads, or the TensorBoard/CSV version folder) and into the W&B config (as a
    nested dict, so every key can be filtered and grouped on, with the git commit and dirty flag);
    without a logger into ``default_root_dir`` (the run folder with ``{run}``), beside earlier
    ones (``fit-config-2.yaml``...), never over them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn enum: "fit", "test", ...
        datamodule = trainer.datamodule
        split = (datamodule.split_summary()
                 if isinstance(datamodule, VolumeSegmentationDataModule) and stage != "predict" else None)
        config = self.parser.dump(self.config, skip_unset=False, skip_validation=True)  # parsing validated it
        folders = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                folders.append(Path(logger.experiment.dir))
                nested = yaml.safe_load(config)  # every key filterable
                logger.experiment.config.update({**nested, "split": split, "code": dict(_code_version())},
                                                allow_val_change=True)
            elif logger.log_dir:
                folders.append(Path(logger.log_dir))
        for folder in folders or [Path(trainer.default_root_dir)]:  # no logger: the run folder (or cwd)
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomically(unused_path(folder / f"{stage}-{self.config_filename}"), config)
            if split is not None:
                write_text_atomically(unused_path(folder / "split.json"), json.dumps(split, indent=1))


@functools.cache
def _code_version() -> tuple[tuple[str, Any], ...]:
    """The git commit and dirty flag, asked of git once per process (the run record and each
    W&B config take them)."""
    return tuple(code_version(ROOT).items())


def run_tags(config: Any) -> list[str]:
    """What a run is, as W&B tags: network, dataset, seed and fold."""
    data = config.get("data") or Namespace()
    dataset = str(data.get("class_path") or "").rsplit(".", 1)[-1].removesuffix("DataModule")
    fold = (data.get("init_args") or Namespace()).get("fold")
    tags = [f"network:{(config.get('model') or Namespace()).get('network', 'unet3d')}", f"dataset:{dataset}",
            f"seed:{config.get('seed_everything')}"]
    return tags + ([] if fold is None else [f"fold:{fold}"])


def configure_wandb(config: Any, subcommand: str, run_id: str | None) -> None:
    """The W&B run of this command. ``RunLogger``: its job type is the subcommand and it is tagged
    with network, dataset, seed and fold. A resumed fit logs into the run that wrote the checkpoint
    (``run_id``, recorded in it), and so do ``validate``/``test`` of a checkpoint unless
    ``evaluate_in_fit_run`` is false, instead of starting a new run with the same name."""
    logger = config.trainer.get("logger")
    class_path = str(logger.get("class_path")) if isinstance(logger, Namespace) else ""
    if not class_path.endswith(("WandbLogger", "RunLogger")):
        return
    args = logger.init_args
    ours = class_path.endswith("RunLogger")
    if ours:
        args.job_type = args.get("job_type") or subcommand
        args.tags = list(dict.fromkeys([*(args.get("tags") or []), *run_tags(config)]))
    evaluates = ours and subcommand in ("validate", "test") and args.get("evaluate_in_fit_run", True)
    joins = subcommand == "fit" or evaluates
    if run_id and joins and not args.get("id"):
        args.id = run_id
        args.resume = "allow"


class NetworkHelp(argparse.Action):
    """``--network_help [NAME]``: the options of one registered network (or all), then exit."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, value: object,
                 option_string: str | None = None) -> None:
        from networks.__main__ import main as list_options

        parser.exit(list_options([] if value == "all" else [str(value)]))


OWN_PACKAGES = ("core", "datamodules", "lightning_modules", "networks")
"""Where the classes a config builds live: a ValueError raised there refuses a value given."""


def refusal_of_a_given_value(error: BaseException) -> str | None:
    """The message of a ValueError that one of our classes raised on a value given to it (a
    DataModule's or network's argument check) while jsonargparse built the classes: the first
    exception of the chain jsonargparse wraps it in that our code raised, prefixed with the class
    being built. None when that one is not a ValueError, or there is none: a bug keeps its traceback."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = []
        tb = error.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        if frames and frames[-1].f_globals.get("__name__", "").split(".")[0] in OWN_PACKAGES:
            if not isinstance(error, ValueError):
                return None
            owners = [type(f.f_locals["self"]).__name__ for f in frames  # the outermost: the class built
                      if f.f_code.co_name == "__init__" and "self" in f.f_locals
                      and type(f.f_locals["self"]).__module__.split(".")[0] in OWN_PACKAGES]
            message = str(error)
            return message if not owners or message.startswith(owners[0]) else f"{owners[0]}: {message}"
        error = error.__cause__ or error.__context__
    return None


class SegmentationCLI(LightningCLI):
    """The CLI: any DataModule by class path; the network, its size and the data's channels,
    classes and patch size flow into the model without being repeated in the config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("args")
        given = sys.argv[1:] if given is None else given
        first = given[0] if isinstance(given, list | tuple) and given else None
        self._asked = first if first in type(self).subcommands() else None
        super().__init__(*args, **kwargs)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Build the parser of the subcommand the command line starts with, not all four: each holds
        the whole signature of the Trainer, model and data (about 0.2 s apiece). Any other command line
        (``--help``, a mistyped subcommand, options first) gets all four, as Lightning builds them."""
        if self._asked is None:
            return super()._add_subcommands(parser, **kwargs)
        asked = {self._asked: type(self).subcommands()[self._asked]}
        self.subcommands = lambda: asked  # type: ignore[method-assign]  # Lightning's loop reads self.subcommands()
        try:
            super()._add_subcommands(parser, **kwargs)
        finally:
            del self.subcommands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": MONITORED,
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.add_lightning_class_args(LearningCurves, "learning_curves")
        parser.add_lightning_class_args(ValidationImages, "validation_images")
        parser.add_lightning_class_args(SegmentationWriter, "prediction_writer")
        parser.add_lightning_class_args(ResumeState, "resume_state")
        parser.add_lightning_class_args(HParamsMetric, "hparams_metric")
        parser.add_argument("--network_help", action=NetworkHelp, nargs="?", const="all", metavar="NAME",
                            help="print the options (model.network_kwargs) of network NAME, typed with defaults, "
                                 "or of every registered network, and exit")
        parser.link_arguments("data.init_args.patch_size", "model.roi_size")
        parser.link_arguments("prediction_writer.flips", "model.flips")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.modality_names", "model.modalities", apply_on="instantiate")
        parser.link_arguments("data.label_space", "model.label_space", compute_fn=LabelSpace.to_dict,
                              apply_on="instantiate")

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a value one of them refuses is one line (a DataError:
        exit 2), not jsonargparse's union report with a traceback. Say which split setting took
        the place of a preset's fraction."""
        try:
            super().instantiate_classes()
        except Exception as error:
            refusal = refusal_of_a_given_value(error)
            if refusal is None:
                raise
            raise DataError(refusal) from None
        datamodule = self.datamodule
        if self.subcommand != "predict" and isinstance(datamodule, VolumeSegmentationDataModule):
            for note in datamodule.split_rule.replaced():
                rank_zero_info(f"data: {note}")

    def before_instantiate_classes(self) -> None:
        """Refuse an unknown network or network option with one line, before anything is built."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.get("model") or {}
        try:
            check_network_options(model.get("network", "unet3d"), model.get("network_kwargs") or {})
        except ValueError as error:
            self.parser.error(f"model: {error}")
        if self.subcommand == "fit":
            run = self.run_folder
            if config.get("checkpoint") is not None:
                config.checkpoint.dirpath = run.checkpoint_dir
            if run.folder is not None and config.trainer.get("default_root_dir") is None:
                config.trainer.default_root_dir = str(run.folder)  # Lightning's SLURM checkpoints go there too
        else:
            if config.get("checkpoint") is not None and "{run}" in str(config.checkpoint.dirpath or ""):
                # validate/test/predict save nothing: the evaluated checkpoint's folder, not a template
                config.checkpoint.dirpath = str(Path(config.ckpt_path).parent) if config.get("ckpt_path") else None
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and Path(ckpt_path).is_file() and config.trainer.get("default_root_dir") is None:
                # the evaluated run's folder, where its reports go: not the current folder (a saved config)
                config.trainer.default_root_dir = str(Path(ckpt_path).resolve().parent.parent)
        if self.subcommand:
            configure_wandb(config, self.subcommand, self.resumed.get(WANDB_RUN_ID))

    def run_record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the run that wrote it: the full config as a nested dict
        (every CLI key, seeds and trainer settings included), the command and the code version.
        Plain types only, so it loads with ``weights_only=True``."""
        config = self.config[self.subcommand]
        dumped = json.loads(self._parser(self.subcommand).dump(config, skip_unset=False, **PARSED_DUMP))
        return {"config": dumped, "command": list(self.command), "code": dict(_code_version())}

    def _dump_config(self) -> None:
        """Lightning's dump of the parsed config (the model's and DataModule's saved
        hyperparameters), the same dict without validating again what parsing just validated
        and without a YAML round trip: 0.09 s -> 0.013 s a command."""
        if hasattr(self, "config_dump"):
            return
        dumped = json.loads(self.parser.dump(self.config, skip_link_targets=False, skip_unset=False, **PARSED_DUMP))
        self.config_dump = dumped[self.config.subcommand] if "subcommand" in self.config else dumped

    def check_windows(self, training: bool) -> None:
        """Refuse, before any work, a training patch or inference window the network cannot take
        (a U-Net's sides must be multiples of 8, ...): one line naming the option."""
        hp = self.model.hparams
        sizes = [("data.init_args.patch_size", hp.roi_size, True)] if training else []
        if hp.inference_roi_size:
            sizes.append(("model.inference_roi_size", hp.inference_roi_size, False))
        elif not training:  # in training the patch was checked, more strictly, in training mode
            sizes.append(("data.init_args.patch_size (the inference window)", hp.roi_size, False))
        for option, size, in_training in sizes:
            problem = input_size_problem(self.model.network, int(hp.in_channels), size, training=in_training)
            if problem:
                raise DataError(f"{option} {list(size)}: {problem}")

    def check_checkpoint_fits_data(self) -> None:
        """The checkpoint evaluated or resumed against the data given: the same modalities in the
        same order (the weights read channels by position) and as many outputs, else one line
        before any work (it used to be a size-mismatch traceback, or, with the channels
        reordered, wrong scores in silence); classes that differ otherwise (BraTS 2021's values
        beside 2023's) are read as the data's by position, said in a warning."""
        if not self.resumed:
            return
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        stored = model_hparams(self.resumed)
        theirs, ours = [str(m) for m in stored.get("modalities") or []], list(self.model.hparams.modalities or [])
        any_contrast = theirs == [ANY_CONTRAST] and len(ours) == 1  # a model of any contrast takes any one
        if theirs and theirs != ours and not any_contrast:
            raise DataError(f"{ckpt_path}: was trained on the modalities {theirs}, in that order; the data gives "
                            f"{ours} (data.init_args.modalities; to train on others, fine-tune: --model.pretrained)")
        their_labels, labels = LabelSpace.from_dict(stored["label_space"]), self.model.labels
        described, given = their_labels.output_names, labels.output_names
        if their_labels.num_outputs != labels.num_outputs or their_labels.region_based != labels.region_based:
            raise DataError(f"{ckpt_path}: was trained for {described}; the data here has {given} (evaluate it on "
                            "data of its classes, or fine-tune it: --model.pretrained)")
        if their_labels.to_dict() != labels.to_dict():
            rank_zero_warn(f"{ckpt_path}: its outputs {described} (values {sorted(their_labels.value_to_class)}) are "
                           f"read as the data's {given} (values {sorted(labels.value_to_class)}), one by one in "
                           "that order", category=DataWarning)

    def before_fit(self) -> None:
        """Say where the run goes, and point ``<runs>/latest`` at it (process 0 only); give the
        model the run's record for its checkpoints; load the weights it fine-tunes (a fit that
        does not resume), before any data is prepared, so a checkpoint that does not fit is said
        first."""
        self.check_windows(training=True)
        self.check_checkpoint_fits_data()
        self.model.run_record = self.run_record()
        if not self.run_folder.resume_from:
            self.model.load_pretrained()
        folder = self.run_folder.folder
        if folder is not None and self.trainer.is_global_zero:
            self._latest_before = latest_target(folder.parent)  # given back if the fit writes nothing
            folder.mkdir(parents=True, exist_ok=True)
            latest = folder.parent / "latest"
            also = f" (also {latest})" if link_latest(folder) else f" ({latest} is not a link of ours: left as it is)"
            resumed = f", resuming {self.run_folder.resume_from}" if self.run_folder.resume_from else ""
            print(f"run folder: {folder}{also}{resumed}", flush=True)

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's, and after a failure what the command started and nothing filled: the W&B
        run of a command refused before any training step (:meth:`RunLogger.discard`), and the
        run folder of a fit that wrote no checkpoint (:func:`~lightning_modules.run_folders.take_back_run`:
        ``latest`` keeps naming the last run that trained). The error itself is raised as it was."""
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            try:
                self._tidy_after(subcommand, error)
            except Exception as problem:  # never in place of the error the user must see
                print(f"train.py: note: could not tidy up after the error ({problem})", file=sys.stderr)
            raise

    def _tidy_after(self, subcommand: str, error: BaseException) -> None:
        folder = self.run_folder.folder
        trained = subcommand == "fit" and self.trainer.global_step > 0
        if isinstance(error, DataError) and not trained:  # refused: its W&B run holds nothing
            for logger in self.trainer.loggers:
                if isinstance(logger, RunLogger):
                    logger.discard()
        if subcommand == "fit" and folder is not None and hasattr(self, "_latest_before"):
            if take_back_run(folder, self._latest_before):
                before = self._latest_before
                latest = f"{folder.parent / 'latest'} -> {before}" if before else "no latest link"
                print(f"run folder: {folder} taken back, the fit wrote no checkpoint ({latest})", flush=True)

    def _record_evaluation(self) -> None:
        """A W&B run evaluating a checkpoint names it, and the run that trained it when it is
        not that run itself."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        trained_in = self.resumed.get(WANDB_RUN_ID)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and ckpt_path:
                record: dict[str, Any] = {"evaluated_checkpoint": str(ckpt_path)}
                if trained_in and logger.experiment.id != trained_in:
                    record["evaluates_run"] = trained_in
                logger.experiment.config.update(record, allow_val_change=True)

    def before_validate(self) -> None:
        self.check_windows(training=False)
        self.check_checkpoint_fits_data()
        self._record_evaluation()

    def before_test(self) -> None:
        self.check_windows(training=False)
        self.check_checkpoint_fits_data()
        self._record_evaluation()
        self._tell_callbacks_the_checkpoint(TestReport)

    def before_predict(self) -> None:
        self.check_windows(training=False)
        self.check_checkpoint_fits_data()
        self._tell_callbacks_the_checkpoint(SegmentationWriter)  # a continued run keeps only this model's files

    def _tell_callbacks_the_checkpoint(self, kind: type) -> None:
        """The checkpoint evaluated, known to the ``kind`` callbacks before setup (the Trainer
        knows it only once it is restored): their output folders are checked before any work."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():  # Lightning's "best"/"last"/"hpc": known once restored
            return
        for callback in self.trainer.callbacks:
            if isinstance(callback, kind):
                callback.checkpoint = str(ckpt_path)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Checkpoints (``--ckpt_path``, resume included) load with ``weights_only=True`` unless
        ``--weights_only false`` is given: a checkpoint carrying pickled code is refused."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("weights_only", True) is None:
            kwargs["weights_only"] = True
        return kwargs

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Keep the command line: a SLURM job's run folder is named after it."""
        if args is None or isinstance(args, list | tuple):
            self.command = [str(a) for a in (sys.argv[1:] if args is None else args)]
        else:  # a dict or Namespace of arguments
            self.command = [json.dumps(args, sort_keys=True, default=str)]
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Plan the fit's run folder (``{run}``; a requeued SLURM job resumes its newest
        checkpoint), then read the checkpoint to resume or evaluate once: Lightning takes the
        model's arguments from it; one written before the label space was stored whole has its
        separate label arguments folded into it. The inference settings given on the command
        line or in a config (``INFERENCE_OPTIONS``) win over the checkpoint's, and the network
        given there is said when it is not the checkpoint's, never dropped in silence."""
        self.resumed: dict[str, Any] = {}  # the checkpoint given by --ckpt_path, read once here
        self.run_folder = RunFolder(None, None, None)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if subcommand == "fit":
            checkpoint = config.get("checkpoint")
            try:
                self.run_folder = choose_run_folder(checkpoint.dirpath if checkpoint else None, config.get("ckpt_path"),
                                         self.command)
            except DataError as error:
                self.parser.error(str(error))
            config.ckpt_path = self.run_folder.resume_from
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        self.resumed = read_checkpoint(ckpt_path)  # weights_only, memory-mapped; bad files named
        stored = model_hparams(self.resumed)
        given = self._given_model_options(subcommand)
        for key in INFERENCE_OPTIONS:
            if key in given and _plain(given[key]) != _plain(stored.get(key)):
                rank_zero_info(f"model.{key}: {_plain(given[key])} as given, not the checkpoint's "
                               f"{_plain(stored.get(key))}")
                stored[key] = given[key]
        for key, value in given.items():  # what the weights were trained as: the checkpoint's, said
            if key == "pretrained" and value:
                value = str(Path(value).resolve())  # as the checkpoint records it: one file, however named
            if key not in INFERENCE_OPTIONS and _plain(value) != _plain(stored.get(key)):
                why = "holds that network's weights" if key.startswith("network") else "was trained so"
                rank_zero_warn(f"model.{key}: the checkpoint's {_plain(stored.get(key))} is used, not "
                               f"{_plain(value)} as given: {ckpt_path} {why}", category=DataWarning)
        self.config = self.parser.parse_object({subcommand: {"model": stored}}, self.config)

    def _given_model_options(self, subcommand: str) -> dict[str, Any]:
        """The model options the command line or a config file gives: named on the command line,
        or set to something other than the parser's default (those the data fills in, and the
        optimiser and schedule, which checkpoints do not hold, aside)."""
        defaults = self._parser(subcommand).get_defaults().model
        model = self.config[subcommand].model
        named = {word.split("=")[0].removeprefix("--model.") for word in self.command if word.startswith("--model.")}
        return {key: model.get(key) for key in vars(model) if key not in NOT_FROM_CHECKPOINTS
                and (key in named or _plain(model.get(key)) != _plain(defaults.get(key)))}


INFERENCE_OPTIONS = ("inference_roi_size", "window_scale", "sw_batch_size", "sw_overlap", "channels_last",
                     "compile_network")
"""Model options that change how a trained network is run, not its weights: given ones win over a checkpoint's."""
NOT_FROM_CHECKPOINTS = ("roi_size", "in_channels", "modalities", "label_space", "flips", "inference_precision",
                        "optimizer", "lr_scheduler")
"""Model options the data fills in (the patch, channels, modalities, labels), the prediction writer's
``flips``, the evaluation's ``inference_precision``, and the optimiser and schedule (in the run's
config, not in checkpoints)."""


def _plain(value: Any) -> Any:
    """A value as a checkpoint stores it (tuples as lists, Namespaces as dicts), for comparing."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


_LITLOGGER_TIP = _DropMessages("litlogger")  # one instance: adding it again changes nothing


def quiet_benign_messages() -> None:
    """Silence what every run printed but nobody can act on: Lightning's advertisement for its
    cloud logger, a deprecation inside Lightning's own pytree helper, the model summary's note that
    it sizes a bf16-mixed model in 32 bits (every bf16 fit), W&B looking for a git repository in the
    run folder (the commit is in the run's config, from ``core.provenance``)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_LITLOGGER_TIP)
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")


def run_cli(args: list[str] | None = None, save_config: bool = True, run: bool = True) -> SegmentationCLI:
    """Parse ``args`` (default: the command line), build model, data and trainer, and run the
    subcommand (unless ``run`` is false: then ``args`` hold no subcommand and nothing runs).
    W&B logs offline unless ``WANDB_MODE`` says otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    quiet_benign_messages()
    # Presets by name; a missing data config said plainly, before LightningCLI reads anything.
    if args is None:
        sys.argv[1:] = check_command_line(sys.argv[1:])
    elif isinstance(args, list | tuple):
        args = check_command_line(args)
    defaults = {"default_config_files": [str(TRAINER_DEFAULTS)]}
    return SegmentationCLI(
        SegmentationModule,
        VolumeSegmentationDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the model's own ``optimizer`` / ``lr_scheduler`` arguments
        trainer_class=Trainer,  # integer batch limits stay integers
        save_config_callback=RunConfigSaver if save_config else None,
        parser_kwargs=({cmd: defaults for cmd in SUBCOMMANDS} if run else defaults),
        args=args,
        run=run,
    )


def main() -> None:
    """The ``brainseg-train`` console command: ``train.py`` with the command line. Bad input
    (a missing folder or file, a wrong modality, an unreadable checkpoint) is one line naming
    the file and the problem, exit code 2, not a traceback; a warning about the data is one line too."""
    one_line_warnings("train.py")
    try:
        run_cli()
    except DataError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
