"""predict.py against MONAI's sliding_window_inference called directly: time and peak memory.

    python -m benchmarks.inference_speed [--base-features 8] [--roi 48] [--overlap 0.5] [--sw-batch-size 4]

One synthetic 2-modality iSeg-sized volume (144 x 192 x 256, int16 Analyze pairs) and one
untrained 3D U-Net checkpoint (the demo's width by default). Each side runs in a fresh
subprocess, so its peak resident memory (``ru_maxrss``) is its own:

- ``predict.py``: the whole command: load the checkpoint, read and preprocess the scans,
  Gaussian-weighted sliding windows, write the segmentation and volumes.csv;
- ``MONAI``: ``monai.inferers.sliding_window_inference`` with the same network, window, overlap,
  window batch and Gaussian weighting on the already preprocessed volume, then argmax: the
  inference alone, nothing read or written.

Both use torch's default thread count. Times are wall-clock seconds of one run each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.loader_throughput import ISEG_SHAPE, write_subject
from core.checkpoint import write_checkpoint
from core.dataset_labels import ISEG
from lightning_modules import SegmentationModule


def make_checkpoint(path: Path, base_features: int, roi: int, overlap: float, sw_batch_size: int) -> None:
    """An untrained U-Net checkpoint that predict.py (and load_from_checkpoint) can read."""
    torch.manual_seed(0)
    model = SegmentationModule("unet3d", {"base_features": base_features}, in_channels=2, label_space=ISEG.to_dict(),
                               modalities=["T1", "T2"], roi_size=(roi,) * 3, sw_batch_size=sw_batch_size,
                               sw_overlap=overlap)
    write_checkpoint(path, model.state_dict(), model.hparams, "datamodules.ISeg2017DataModule",
                     {"modalities": ["T1", "T2"]})


def run_predict(checkpoint: Path, data: Path, output: Path) -> dict[str, float]:
    import predict

    start = time.perf_counter()
    predict.predict(checkpoint, [data / "subject-1-T1.hdr", data / "subject-1-T2.hdr"], output)
    return {"seconds": time.perf_counter() - start}


def run_monai(checkpoint: Path, data: Path, output: Path) -> dict[str, float]:
    from monai.inferers import sliding_window_inference

    from core.volumes import PreprocessingSettings, Subject, load_subject

    model = SegmentationModule.load_from_checkpoint(str(checkpoint), map_location="cpu").eval()
    subject = Subject("subject-1", (data / "subject-1-T1.hdr", data / "subject-1-T2.hdr"))
    image = torch.from_numpy(load_subject(subject, None, PreprocessingSettings()).image)[None]
    hp = model.hparams
    start = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(image, roi_size=tuple(hp.roi_size), sw_batch_size=hp.sw_batch_size,
                                          predictor=model.network, overlap=hp.sw_overlap, mode="gaussian")
        logits.argmax(dim=1)
    return {"seconds": time.perf_counter() - start}


def child(which: str, checkpoint: Path, data: Path, output: Path) -> None:
    """One side of the comparison in this (fresh) process; prints JSON."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"predict": run_predict, "monai": run_monai}[which](checkpoint, data, output)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["rss_before_gib"] = before / 2**20
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-features", type=int, default=8)
    parser.add_argument("--roi", type=int, default=48)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, *paths = args.child
        child(which, *map(Path, paths))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "scans"
        data.mkdir()
        write_subject(data, 1, ISEG_SHAPE)
        checkpoint = tmp / "unet3d.ckpt"
        make_checkpoint(checkpoint, args.base_features, args.roi, args.overlap, args.sw_batch_size)
        results = {}
        for which in ("monai", "predict"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.inference_speed", "--child", which,
                                  str(checkpoint), str(data), str(tmp / which)], capture_output=True, text=True,
                                 check=True).stdout
            results[which] = json.loads(out.strip().splitlines()[-1])
    print(f"3D U-Net base {args.base_features}, window {args.roi}^3, overlap {args.overlap}, sw_batch_size "
          f"{args.sw_batch_size}; one 2-modality volume {'x'.join(map(str, ISEG_SHAPE))}; "
          f"torch threads {torch.get_num_threads()}")
    print("| what | seconds | peak RSS (GiB) |")
    print("|---|---:|---:|")
    print(f"| predict.py (read, preprocess, infer, write) | {results['predict']['seconds']:.1f} | "
          f"{results['predict']['peak_rss_gib']:.2f} |")
    print(f"| MONAI sliding_window_inference alone | {results['monai']['seconds']:.1f} | "
          f"{results['monai']['peak_rss_gib']:.2f} |")
    print(f"ratio predict.py / MONAI: {results['predict']['seconds'] / results['monai']['seconds']:.2f}")


if __name__ == "__main__":
    main()
