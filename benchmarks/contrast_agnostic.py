"""One model for any contrast: a demo-sized U-Net trained from the demo's label maps alone
(``configs/recipes/synthseg.yaml``) beside one of the same size and budget trained on the
synthetic T1 images (the demo recipe with ``modalities: [T1]``), each tested on the demo's T1
and T2 test scans, one at a time, and on the real ICBM152 2009 T1 template (its labels built
from its GM/WM maps and mask exactly as the demo's, ``demo.synthetic_iseg.icbm_reference``).

    python -m benchmarks.contrast_agnostic --out runs/contrast            # 12 epochs each, as the demo
    python -m benchmarks.contrast_agnostic --out /tmp/c --epochs 1        # a quick look
    python -m benchmarks.contrast_agnostic --out /tmp/w --models label --base-features 16   # a wider label-map model

A fourth kind of scan tells a model that has not learned its own training images from one
whose training images are unlike real scans: images the recipe's generator makes from the
test subjects' label maps (three seeded draws each, every one a new random contrast), scored
like the others.

Prints the Dice per tissue of every model x scan, the WM volume error on ICBM, the fits'
wall times and the device, as a Markdown table. Runs one thing at a time: the timings are
only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from core.dataset_labels import ISEG
from core.geometry import voxel_spacing
from core.io import load_volume
from core.metrics import score_subject

TISSUES = ("CSF", "GM", "WM")
TEST_SUBJECTS = ("subject-9", "subject-10")
MODELS = {  # name -> extra train.py arguments on top of the demo recipe
    "T1 images": ["--data.init_args.modalities", "[T1]"],
    "label maps (synthseg)": ["--config", "configs/recipes/synthseg.yaml",
                              "--data.init_args.target_spacing", "[2.0, 2.0, 2.0]"],  # the demo's own grid
}


def fit(name: str, extra: list[str], out: Path, epochs: int, data: Path, accelerator: str) -> tuple[Path, float]:
    """One demo-recipe fit (no logger) into ``out/<name>``: its best (else last) checkpoint and
    its wall time."""
    from train import run_cli

    folder = out / name.split()[0].lower()
    if accelerator == "gpu":  # patches generated (and augmented) on the GPU, batch by batch
        extra = [*extra, "--data.init_args.augment_on", "device"]
    start = time.perf_counter()
    run_cli(["fit", "--config", "configs/demo.yaml", *extra, "--data.init_args.data_dir", str(data),
             "--data.init_args.cache_dir", str(out / "cache"), "--trainer.max_epochs", str(epochs),
             "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.accelerator", accelerator, "--trainer.default_root_dir", str(folder),
             "--checkpoint.dirpath", str(folder / "checkpoints")], save_config=False)
    best = folder / "checkpoints" / "best.ckpt"  # none when no validation ran (a quick look)
    return (best if best.is_file() else folder / "checkpoints" / "last.ckpt"), time.perf_counter() - start


def dice(prediction: Path, truth: Path) -> tuple[list[float], float]:
    """Dice per tissue of a predicted iSeg-valued map against the truth, and the WM volume error (%)."""
    predicted, _ = load_volume(prediction)
    reference, affine = load_volume(truth)
    scores = score_subject(np.rint(predicted), np.rint(reference), voxel_spacing(affine),
                           {n: ISEG.structure_values[n] for n in TISSUES})
    wm = ISEG.structure_values["WM"][0]
    error = 100 * ((np.rint(predicted) == wm).sum() / max((np.rint(reference) == wm).sum(), 1) - 1)
    return [scores[t].dice for t in TISSUES], float(error)


def generated_scans(data: Path, out: Path, spacing: float, draws: int = 3) -> list[tuple[Path, Path]]:
    """(image, label) pairs: ``draws`` images per test subject made by the recipe's generator
    (``labels_to_image`` of ``configs/recipes/synthseg.yaml``, seeds 0, 1, ...) from its label
    map alone, background 0 and brain intensities shifted to be positive, as a scan is stored."""
    import yaml

    from datamodules.synthesis import LabelsToImage
    from demo.synthetic_iseg import write_analyze

    steps = yaml.safe_load(Path("configs/recipes/synthseg.yaml").read_text())["data"]["init_args"]["augmentation"]
    options = next(step for step in steps if step["name"] == "labels_to_image")
    generator = LabelsToImage(**{k: v for k, v in options.items() if k != "name"})
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for subject in TEST_SUBJECTS:
        truth = data / f"{subject}-label.hdr"
        classes = torch.from_numpy(ISEG.encode(load_volume(truth)[0], truth)[None]).long()
        for draw in range(draws):
            image, _ = generator(torch.zeros(classes.shape), classes, np.random.default_rng(draw))
            brain = classes[0].numpy() > 0
            scan = np.where(brain, 100 * (image[0].numpy() - image[0].numpy()[brain].min()) + 1, 0)
            write_analyze(scan.astype(np.int16), spacing, out / f"{subject}-generated{draw}.hdr")
            pairs.append((out / f"{subject}-generated{draw}.hdr", truth))
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/demo/iSeg-2017-Training"))
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs and predictions")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--base-features", type=int, help="the U-Net's width (the demo's: 8); larger for a "
                        "model that must learn every contrast")
    parser.add_argument("--models", nargs="+", choices=[name.split()[0] for name in MODELS],
                        default=[name.split()[0] for name in MODELS], help="which of the two to train")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out}: exists and is not empty; choose a new folder")
    import predict
    from demo.synthetic_iseg import SynthesisSettings, build_dataset, icbm_reference, write_analyze

    settings = SynthesisSettings()
    build_dataset(args.data, settings)
    icbm = args.out / "icbm"
    icbm.mkdir(parents=True)
    t1, label = icbm_reference(settings.spacing)
    write_analyze(t1, settings.spacing, icbm / "icbm-T1.hdr")
    write_analyze(label, settings.spacing, icbm / "icbm-label.hdr")
    scans = {f"demo {c}": [(args.data / f"{s}-{c}.hdr", args.data / f"{s}-label.hdr") for s in TEST_SUBJECTS]
             for c in ("T1", "T2")}
    scans["ICBM152 T1 (real)"] = [(icbm / "icbm-T1.hdr", icbm / "icbm-label.hdr")]
    scans["generated from the test labels"] = generated_scans(args.data, args.out / "generated", settings.spacing)
    rows, fits = [], {}
    width = [] if args.base_features is None else ["--model.network_kwargs", f"{{base_features: {args.base_features}}}"]
    for name, extra in ((n, [*e, *width]) for n, e in MODELS.items() if n.split()[0] in args.models):
        checkpoint, seconds = fit(name, extra, args.out, args.epochs, args.data, args.accelerator)
        fits[name] = seconds
        for scan, pairs in scans.items():
            per_tissue, wm_errors = [], []
            for image, truth in pairs:
                target = args.out / "predictions" / checkpoint.parts[-3] / scan.split()[0] / image.stem
                (written,) = predict.predict(checkpoint, [image], target, subject_id=image.stem,
                                             device="cuda" if args.accelerator == "gpu" else "cpu")
                scores, wm_error = dice(written, truth)
                per_tissue.append(scores)
                wm_errors.append(wm_error)
            mean = np.mean(per_tissue, axis=0)
            rows.append(f"| {name} | {scan} | " + " | ".join(f"{d:.3f}" for d in mean)
                        + f" | {mean.mean():.3f} | {np.mean(wm_errors):+.0f} % |")
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"{platform.processor() or 'CPU'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"\n{args.epochs} epochs of the demo recipe each ({device}); fit wall time: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in fits.items()))
    print("\n| trained on | tested on | CSF | GM | WM | mean | WM volume |\n|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
