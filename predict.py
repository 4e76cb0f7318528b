"""Segment new scans with a trained checkpoint: ``python predict.py --checkpoint C --input ... --output D``.

The checkpoint is all it needs: the model stores its network, modalities (names and order),
classes, the dataset's own label values and window size; the DataModule's saved arguments
give the preprocessing and the folder layout. ``--input`` is either one subject's modality
files, in the checkpoint's modality order, or a folder in the layout the model was trained on
(e.g. ``iSeg-2017-Testing/``, a BraTS validation folder, a Decathlon task folder).

For each subject it writes ``<subject>_seg.nii.gz`` in the scan's own space (shape, affine,
orientation) and label values, optionally ``<subject>_probabilities.nii.gz`` (one volume per
class or region, float32), and finally ``volumes.csv``: millilitres per class (or region) per
subject, and a line in ``predictions.jsonl``: when, with which checkpoints and settings, which
subjects, at which commit. A model trained on an nnU-Net dataset names them as nnU-Net does (``<case>.nii.gz``);
one trained on a BIDS dataset writes a BIDS derivative (``sub-*/[ses-*/]anat/*_dseg.nii.gz``
with JSON sidecars naming their input images, ``dseg.tsv``, ``dataset_description.json``,
``volumes.tsv``, ``.bidsignore``); a model of any other layout reads a BIDS dataset with
``--bids-modalities T1w T2w`` (the suffixes standing for its modalities) and writes the same
derivative. Every file is written under a temporary name and renamed.

Of a folder, ``--subjects`` picks some subjects (``sub-01`` or, as BIDS Apps'
``--participant_label`` takes it, ``01``: a BIDS participant's sessions) and
``--shard K/N`` every N-th from the K-th, so that the tasks of a SLURM array share a dataset.

Several checkpoints (``--checkpoint fold0.ckpt fold1.ckpt ...``: the folds of a
cross-validation, or seeds) are an ensemble: their probabilities are averaged, then one class
map; they must share modalities, classes and preprocessing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.io import DataError, one_line_warnings

# torch, MONAI, the Segmenter and the folder layouts (Lightning, through datamodules) are imported
# where they are used, after the command line is read: --help and a mistyped option answer at
# once instead of after 3-5 s of imports.

# The CPU preset (--cpu-fast): nnU-Net's most common complaint is 42 minutes a case on a CPU, 3
# without mirroring. No mirroring (8x the work), less window overlap (0.25: each voxel in about
# 2 windows instead of 8), windows twice the training patch per side (less border waste), one
# window per forward pass, every core, and bfloat16 where the CPU runs it natively (AVX512-BF16,
# AMX: about 1.9x faster than float32; emulated bf16 elsewhere would be slower).
CPU_FAST = {"flips": False, "sw_overlap": 0.25, "window_scale": 2, "sw_batch_size": 1}


def cpu_fast_precision() -> str:
    """The preset's precision on this CPU: bf16 where it is native, else float32."""
    from core.inference import fast_bf16

    return "bf16" if fast_bf16("cpu") else "32"


def cpu_fast(sw_overlap: float | None = None, sw_batch_size: int | None = None, window_scale: int | None = None,
             precision: str | None = None, checkpoint_window_scale: int = 1) -> dict[str, Any]:
    """The CPU preset's window and precision settings, a setting given explicitly kept; windows
    at least the preset's scale, and at least the checkpoint's when none is given."""
    return {"sw_overlap": CPU_FAST["sw_overlap"] if sw_overlap is None else sw_overlap,
            "sw_batch_size": sw_batch_size or CPU_FAST["sw_batch_size"],
            "window_scale": max(window_scale or checkpoint_window_scale, CPU_FAST["window_scale"]),
            "precision": precision or cpu_fast_precision()}


def stored_window_scale(checkpoints: Sequence[Path]) -> int:
    """The largest ``window_scale`` the checkpoints were saved with (1 for those without one)."""
    from core.checkpoint import model_hparams, read_checkpoint

    return max(int(model_hparams(read_checkpoint(path)).get("window_scale") or 1) for path in checkpoints)


def predict(checkpoint: Path | Sequence[Path], inputs: Sequence[Path], output: Path, device: str = "cpu",
            sw_overlap: float | None = None, sw_batch_size: int | None = None, flips: bool = False,
            save_probabilities: bool = False, subject_id: str | None = None, overwrite: bool = False,
            window_scale: int | None = None, precision: str = "32", contrast: str | None = None,
            subjects: Sequence[str] | None = None, shard: tuple[int, int] | None = None,
            resample_to_first: bool = False, case_names: bool = False,
            bids_modalities: Sequence[str] | None = None, continuing: bool = False,
            brain_mask: Path | str | None = None, keep_largest: Sequence[str] = ()) -> list[Path]:
    """Segment every subject of ``inputs`` with one checkpoint or the ensemble of several;
    returns the segmentation files written. For a folder: ``contrast``, with a model of any
    contrast, the modality of the folder's layout to segment (default: the one it was validated
    on); ``subjects``, only these (a BIDS participant, ``sub-01``, stands for its sessions);
    ``shard`` ``(k, n)``, only every n-th subject from the k-th (0-based), so that n jobs (a
    SLURM array) segment a dataset between them into one folder. ``resample_to_first``: the other
    modalities (scans not co-registered onto one grid) resampled onto the first one's grid through
    the affines, whatever the checkpoint's preprocessing says. ``case_names``: each segmentation
    named ``<case>.nii.gz`` (BraTS' submissions, nnU-Net's), not the dataset's own convention.
    ``bids_modalities``: the folder is a BIDS dataset whatever the model was trained on, these
    suffixes (``T1w``, ``acq-mprage_T1w``) standing for its modalities in order; the
    segmentations are then a BIDS derivative. ``continuing``: ``output`` holds an interrupted
    run's segmentations; the subjects it wrote whole with this model and these settings are
    kept, the others segmented. ``brain_mask``:
    with one subject's files, a mask whose outside is set to 0 in every scan first (scans not
    skull-stripped, or with interpolation ringing around the brain, for a model of skull-stripped
    scans); with a BIDS dataset, the derivatives pipeline holding each session's mask
    (``*_desc-brain_mask``: fMRIPrep's, SynthStrip's); with a NIfTI folder, the masks' pattern
    (``{subject}/brain_mask.nii.gz``). ``keep_largest``: structures (class names,
    or ``foreground``) cut to their largest connected component (nnU-Net's postprocessing;
    ``evaluate.py --keep-largest-gains`` says which gain)."""
    from core.segmenter import load_segmenter
    from datamodules.folders import (
        folder_layout,
        output_names,
        subjects_in_folder,
        with_brain_masks_of,
        without_missing_masks,
    )

    # A bar over the windows of each volume when run in a terminal.
    segmenter = load_segmenter(checkpoint, device, sw_overlap=sw_overlap, sw_batch_size=sw_batch_size,
                               window_scale=window_scale, progress=sys.stderr.isatty(), precision=precision)
    if resample_to_first:
        segmenter.preprocessing = replace(segmenter.preprocessing, resample_to_first=True)
    if keep_largest:
        segmenter.keep_largest_of(keep_largest)
    layout, folder = segmenter.datamodule, len(inputs) == 1 and Path(inputs[0]).is_dir()
    if folder:
        layout, modalities = folder_layout(layout, segmenter.modalities, segmenter.source, contrast, bids_modalities)
        layout = (with_brain_masks_of(layout, brain_mask, segmenter.source) if brain_mask is not None
                  else without_missing_masks(layout, inputs[0]))
        chosen = subjects_in_folder(inputs[0], layout, modalities, segmenter.source, contrast, only=subjects)
        if shard is not None:
            chosen = chosen[shard[0]::shard[1]]
    elif subjects is not None or shard is not None or bids_modalities is not None:
        raise DataError(f"{inputs[0]}: choosing subjects (--subjects, --shard) or reading BIDS (--bids-modalities) "
                        "needs a dataset folder as --input, not one subject's files")
    else:
        chosen = [segmenter.subject(inputs, subject_id, brain_mask)]
    return segmenter.segment_to_folder(chosen, output, flips=flips, probabilities=save_probabilities,
                                       overwrite=overwrite,
                                       names=output_names(layout, case_names, folder and segmenter.any_contrast),
                                       continuing=continuing)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> ``(K, N)`` with ``0 <= K < N`` (``$SLURM_ARRAY_TASK_ID/N`` for ``--array=0-<N-1>``)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 0/4)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be 0 to N-1")
    return index, count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                        help="a checkpoint, or several to ensemble (probabilities averaged)")
    parser.add_argument("--input", type=Path, nargs="+", required=True,
                        help="one subject's modality files (checkpoint order) or a dataset folder")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--subject", help="output name for modality-file input (default: the files' shared name)")
    parser.add_argument("--brain-mask", type=Path, metavar="MASK",
                        help="with one subject's files: a brain mask (non-zero inside; SynthStrip's, FSL BET's, "
                             "fMRIPrep's desc-brain_mask) whose outside is set to 0 in every scan first, as a "
                             "skull-stripped scan's background is; with a BIDS dataset: the derivatives folder "
                             "holding each session's sub-*_desc-brain_mask.nii.gz; with a NIfTI folder: the masks' "
                             "pattern, '{subject}/brain_mask.nii.gz'")
    parser.add_argument("--subjects", "--participant_label", nargs="+", metavar="ID",
                        help="a folder's subjects to segment, by id (sub-01 stands for all its BIDS sessions; "
                             "as in BIDS Apps, the label alone, 01, does too)")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="segment every N-th subject of the folder from the K-th (0-based): N jobs, e.g. a SLURM "
                             "array --array=0-<N-1> with --shard $SLURM_ARRAY_TASK_ID/N, share one output folder")
    parser.add_argument("--contrast", help="a model of any contrast given a folder: the layout's modality to "
                        "segment (T2, FLAIR, a BIDS suffix such as T2w; default: the one it was validated on)")
    parser.add_argument("--bids-modalities", nargs="+", metavar="SUFFIX",
                        help="read --input as a BIDS dataset whatever the model was trained on: the BIDS suffixes "
                             "(optionally after entities: T1w, acq-mprage_T1w) that stand for the model's modalities, "
                             "in its order; writes a BIDS derivative")
    parser.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda where there is a GPU, else cpu)")
    parser.add_argument("--sw-overlap", "--overlap", type=float, dest="sw_overlap",
                        help="sliding-window overlap (default: the checkpoint's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the checkpoint's)")
    parser.add_argument("--flips", action="store_true", help="test-time augmentation: mean over 8 mirrorings")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier predictions of the same subjects in --output (never any other file)")
    parser.add_argument("--continue-prediction", action="store_true", dest="continuing",
                        help="after an interrupted run into --output: keep the subjects it segmented whole with this "
                             "model and these settings, segment the others (as nnU-Net's --continue_prediction)")
    parser.add_argument("--window-scale", type=int,
                        help="sliding windows this many times the checkpoint's window per side (default: the "
                             "checkpoint's window_scale, 1 for checkpoints without one)")
    parser.add_argument("--threads", type=int, help="CPU threads for inference (default: torch's)")
    parser.add_argument("--precision", metavar="{32,bf16}",
                        help="bf16: the network under bfloat16 autocast (GPUs from Ampere on, CPUs with AVX512-BF16); "
                             "default 32")
    parser.add_argument("--case-names", action="store_true",
                        help="name each segmentation <case>.nii.gz (a BraTS submission, nnU-Net's naming) instead "
                             "of <case>_seg.nii.gz")
    parser.add_argument("--resample-to-first", action="store_true",
                        help="resample the other modalities onto the first one's grid through the affines (scans not "
                             "co-registered onto one grid); default: the checkpoint's preprocessing")
    parser.add_argument("--keep-largest", nargs="+", default=(), metavar="STRUCTURE",
                        help="keep only the largest connected component of these structures (class names, or "
                             "foreground for all as one): nnU-Net's postprocessing, for those that evaluate.py "
                             "--keep-largest-gains found it helps on validation subjects")
    parser.add_argument("--cpu-fast", action="store_true",
                        help="the CPU preset: no mirroring, overlap 0.25, windows x2, one window a pass, every core, "
                             "bf16 where the CPU has it")
    args = parser.parse_args(argv)
    import torch

    from core.inference import PRECISIONS

    if args.precision is not None and args.precision not in PRECISIONS:
        parser.error(f"argument --precision: invalid choice: {args.precision!r} (choose from {', '.join(PRECISIONS)})")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    one_line_warnings("predict.py")
    try:
        if args.cpu_fast:
            args.device, args.flips = "cpu", CPU_FAST["flips"]
            stored = stored_window_scale(args.checkpoint) if args.window_scale is None else 1
            vars(args).update(cpu_fast(args.sw_overlap, args.sw_batch_size, args.window_scale, args.precision, stored))
            args.threads = args.threads or os.cpu_count()
        args.precision = args.precision or "32"
        if args.threads:
            torch.set_num_threads(args.threads)
        written = predict(args.checkpoint, args.input, args.output, device=args.device, sw_overlap=args.sw_overlap,
                          sw_batch_size=args.sw_batch_size, flips=args.flips, save_probabilities=args.probabilities,
                          subject_id=args.subject, overwrite=args.overwrite, window_scale=args.window_scale,
                          precision=args.precision, contrast=args.contrast, subjects=args.subjects, shard=args.shard,
                          resample_to_first=args.resample_to_first, case_names=args.case_names,
                          bids_modalities=args.bids_modalities, continuing=args.continuing,
                          brain_mask=args.brain_mask, keep_largest=args.keep_largest)
        if not written and args.shard:
            print(f"predict.py: shard {args.shard[0]}/{args.shard[1]} has no subjects (fewer than "
                  f"{args.shard[0] + 1} to share out); nothing written")
    except DataError as error:
        parser.exit(2, f"predict.py: error: {error}\n")


if __name__ == "__main__":
    main()
