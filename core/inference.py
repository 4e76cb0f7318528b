"""Whole-volume inference: Gaussian-weighted sliding windows (MONAI) for any network, unpadded
ones included, and the mean over mirrorings (test-time augmentation).

Plain PyTorch: the LightningModule (validation, test), the :class:`~core.segmenter.Segmenter`
(``predict.py``, ``train.py predict``, notebooks) and the benchmarks all call these.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

FLIPS = [dims for n in range(4) for dims in itertools.combinations((2, 3, 4), n)]


def sliding_window_logits(network: nn.Module, image: torch.Tensor, roi_size: Sequence[int], sw_batch_size: int = 2,
                          overlap: float = 0.5, border: int = 0, name: str = "network",
                          progress: bool = False) -> torch.Tensor:
    """Logits (B, C, D, H, W) of a whole volume (B, M, D, H, W) by Gaussian-weighted windows.

    ``border``: voxels an unpadded network loses on each side (its output is its input minus
    ``border`` a side). The volume is then padded by ``border`` (zero, the z-scored background)
    so every voxel can be a window's centre; each window's output is put back in the window's
    frame with a mask of where it is valid, MONAI blends both with the same Gaussian weights,
    and their ratio is the weighted mean over the windows whose valid centre covers the voxel.
    The overlap is raised so that the window step never exceeds the valid centre.
    ``progress``: MONAI's bar over the windows.
    """
    roi = tuple(int(r) for r in roi_size)
    if border == 0:
        return sliding_window_inference(image, roi_size=roi, sw_batch_size=sw_batch_size, predictor=network,
                                        overlap=overlap, mode="gaussian", progress=progress)
    b = border
    if min(roi) <= 2 * b:
        raise ValueError(f"inference windows {roi} leave nothing of {name}'s output: "
                         f"it loses {b} voxels a side, so every side must exceed {2 * b}")

    def predictor(window: torch.Tensor) -> torch.Tensor:
        logits = network(window)
        valid = torch.ones_like(logits[:, :1])
        return F.pad(torch.cat([logits, valid], dim=1), [b] * 6)

    overlap = max(overlap, 2 * b / min(roi))
    blended = sliding_window_inference(F.pad(image, [b] * 6), roi_size=roi, predictor=predictor,
                                       sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian",
                                       progress=progress)
    blended = blended[..., b:-b, b:-b, b:-b]
    return blended[:, :-1] / blended[:, -1:].clamp_min(torch.finfo(blended.dtype).tiny)


PRECISIONS = ("32", "bf16")


def fast_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 runs natively here, so that bf16 autocast is faster than float32: CUDA
    GPUs with bf16 (Ampere on) and CPUs whose oneDNN has bf16 instructions (AVX512-BF16, AMX).
    Elsewhere bf16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":  # Ampere (compute capability 8.0) on; torch's default check admits emulation
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    capabilities = torch.cpu.get_capabilities()
    if "avx2" in capabilities:  # x86: the instructions themselves (oneDNN's own check admits emulation on AVX512)
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # ARM: its bf16 extension


def fast_fp16(device: str | torch.device) -> bool:
    """Whether float16 runs natively here: CUDA GPUs (tensor cores from Volta on) and CPUs with
    AVX512-FP16 or AMX-FP16. Elsewhere float16 autocast on a CPU is emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    capabilities = torch.cpu.get_capabilities() if device.type == "cpu" else {}
    return bool(capabilities.get("avx512_fp16") or capabilities.get("amx_fp16"))


def half_type(precision: object) -> str | None:
    """``"bf16"`` or ``"16"`` for a half precision as Lightning or ``predict.py`` name it
    (``bf16-mixed``, ``16-true``, ``"bf16"``, ``16``...), None for float32 or float64."""
    name = str(precision)
    if name.startswith("bf16"):
        return "bf16"
    return "16" if name in ("16", "16-mixed", "16-true") else None


def emulated_precision(device: str | torch.device, precision: object) -> str | None:
    """Why ``precision`` would crawl on ``device``, or None: a half precision this hardware only
    emulates (a training step of the demo's U-Net on an AVX2 CPU: 108 s in bf16 or float16 autocast
    against 0.7 s in float32). Said before any work, so that a GPU preset run on the wrong machine,
    or a bf16 preset on a pre-Ampere GPU, is not found out hours later."""
    device, half = torch.device(device), half_type(precision)
    if half is None or device.type not in ("cpu", "cuda"):
        return None
    if half == "bf16" and not fast_bf16(device):
        hardware = ("this GPU (no native bfloat16 before compute capability 8.0, Ampere)" if device.type == "cuda"
                    else "this CPU (no AVX512-BF16 or AMX)")
        return f"precision {precision}: bfloat16 is emulated on {hardware}, many times slower than float32"
    if half == "16" and not fast_fp16(device):
        return (f"precision {precision}: float16 is emulated on this CPU (no AVX512-FP16 or AMX-FP16), many times "
                "slower than float32")
    return None


def autocast_at(device_type: str, precision: str) -> torch.autocast:
    """The autocast state of an inference ``precision`` (``"32"`` or ``"bf16"``), whatever is
    active around it: ``"32"`` turns off an enclosing autocast (a Trainer's ``bf16-mixed``), so
    that a volume scores the same in ``train.py test`` as in ``predict.py``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def mean_over_flips(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                         flips: bool = False, precision: str = "32") -> torch.Tensor:
    """``predict(image)``, or with ``flips`` the mean of ``predict`` over the 8 mirrorings of
    the volume (each output flipped back), in float32.

    Runs under ``torch.inference_mode`` (no autograd bookkeeping at all: a few % faster than
    ``no_grad``, as nnU-Net's predictor). ``precision="bf16"``: the network runs under bfloat16
    autocast (about 1.9x faster on a CPU with native bf16, see :func:`fast_bf16`); the windows are
    still blended and the mirrorings summed in float32."""
    total = None
    with torch.inference_mode(), autocast_at(image.device.type, precision):
        for dims in FLIPS if flips else [()]:
            flipped = torch.flip(image, dims) if dims else image
            out = predict(flipped).float()
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
    return total / (len(FLIPS) if flips else 1)
