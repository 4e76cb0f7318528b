"""Build a synthetic dataset in the exact iSeg-2017 layout from the ICBM152 2009 template.

Real anatomy, synthetic subjects: nilearn ships the ICBM152 T1 template, its grey- and
white-matter probability maps and a brain mask. CSF is the mask minus GM minus WM. Each
subject is a random smooth deformation (a small random affine plus a smooth displacement
field) of those maps, resampled to ``spacing`` mm. Labels are the argmax of the deformed
tissue probabilities inside the deformed mask. Images mix the tissue probabilities with
tissue intensities (T1-weighted: CSF dark, WM bright; T2-weighted: the reverse), then get a
smooth multiplicative bias field, Gaussian noise and a random intensity scale, and are written
as int16 Analyze pairs; labels as uint8 with iSeg's values 0/10/150/250.

Everything follows from ``seed``: the same seed gives byte-identical files.

    python -m demo.synthetic_iseg --out data/demo/iSeg-2017-Training --subjects 10
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

# Mean intensity of (CSF, GM, WM) relative to WM = 1 in T1w, to CSF = 1 in T2w.
TISSUE_INTENSITY = {"T1": (0.30, 0.62, 1.00), "T2": (1.00, 0.62, 0.42)}
LABEL_VALUES = (10, 150, 250)  # CSF, GM, WM in iSeg-2017


@dataclass(frozen=True)
class SynthesisSettings:
    """Everything that determines the dataset; stored beside it so a cache can be checked."""

    subjects: int = 10
    seed: int = 0
    spacing: float = 2.0
    max_rotation_deg: float = 6.0
    max_scaling: float = 0.06
    displacement_mm: float = 4.0
    control_spacing_mm: float = 24.0
    bias_strength: float = 0.2
    noise_std: float = 0.03
    version: int = 1


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ICBM152 (brain mask, GM, WM) at 1 mm as float32 arrays in [0, 1]."""
    from nilearn import datasets  # heavy import, only needed to build the data

    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    return mask, gm * mask, wm * mask


@dataclass(frozen=True)
class Template:
    """ICBM152's (brain mask, GM, WM) anti-aliased for one output spacing, and the output grid
    around the brain (origin in template voxels, shape). Both depend on the spacing alone, so a
    dataset computes them once, not once per subject (three Gaussian filters of the 1 mm volume)."""

    maps: tuple[np.ndarray, np.ndarray, np.ndarray]
    origin: np.ndarray
    shape: np.ndarray
    spacing: float


def prepare_template(spacing: float) -> Template:
    """The template for subjects (or the reference) at ``spacing`` mm."""
    mask, gm, wm = load_template()
    origin, shape = _output_grid(mask, spacing)
    maps = (_antialias(mask, spacing), _antialias(gm, spacing), _antialias(wm, spacing))
    return Template(maps, origin, shape, spacing)


def _smooth_field(rng: np.random.Generator, coarse_shape: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Random values on a coarse grid, cubic-upsampled to ``shape``: a smooth random field."""
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse_shape, strict=True)]
    return ndimage.zoom(coarse, zoom, order=3, mode="nearest")[tuple(slice(0, s) for s in shape)]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    return rotation


def _output_grid(mask: np.ndarray, spacing: float, margin_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Origin (template voxel coordinates) and shape of the output grid around the brain."""
    idx = np.argwhere(mask > 0.5)
    lo = idx.min(0) - margin_mm
    hi = idx.max(0) + margin_mm
    shape = np.ceil((hi - lo) / spacing).astype(int)
    return lo, shape


def _antialias(volume: np.ndarray, spacing: float) -> np.ndarray:
    """A 1 mm template map smoothed for sampling at ``spacing`` mm."""
    sigma = max(0.0, (spacing - 1.0) / 2.0)
    return ndimage.gaussian_filter(volume, sigma) if sigma > 0 else volume


def _sample(smoothed: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """An anti-aliased template map at ``coords`` (template voxels), linearly interpolated."""
    return ndimage.map_coordinates(smoothed, coords, order=1, mode="constant", cval=0.0)


def _tissues_and_label(template: Template, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CSF, GM, WM) probabilities at ``coords``, the brain mask, and the label map: the argmax
    of the tissue probabilities inside the mask, in iSeg's values. CSF is the mask minus GM and WM."""
    brain, gm_d, wm_d = (_sample(volume, coords) for volume in template.maps)
    csf_d = np.clip(brain - gm_d - wm_d, 0.0, 1.0)
    inside = brain > 0.5
    tissues = np.stack([csf_d, gm_d, wm_d])
    label = np.zeros(brain.shape, dtype=np.uint8)
    label[inside] = np.asarray(LABEL_VALUES, dtype=np.uint8)[np.argmax(tissues[:, inside], axis=0)]
    return tissues, inside, label


def icbm_reference(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The real ICBM152 2009 T1 template on the demo's grid at ``spacing`` mm, undeformed, its
    brain kept as the demo's images are (zero outside the mask), and the reference label map
    built from the template's GM/WM maps and mask exactly as the demo subjects' labels are:
    ``(T1 int16, label uint8)``. A real scan, for the synthetic-to-real gap."""
    from nilearn import datasets

    template = prepare_template(spacing)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in template.shape], indexing="ij"))
    coords = grid * np.float32(spacing) + template.origin.reshape(3, 1, 1, 1).astype(np.float32)
    _, inside, label = _tissues_and_label(template, coords)
    t1 = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    t1 = _sample(_antialias(t1, spacing), coords)
    t1[~inside] = 0.0
    return np.round(t1 / max(float(t1.max()), 1e-6) * 1000).astype(np.int16), label


def synthesize_subject(
    template: Template,
    settings: SynthesisSettings,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic subject: ``({"T1": int16, "T2": int16}, label uint8 with iSeg values)``;
    ``template`` from ``prepare_template(settings.spacing)``."""
    if template.spacing != settings.spacing:
        raise ValueError(f"the template was prepared for {template.spacing} mm, "
                         f"the subject is at {settings.spacing} mm")
    origin, shape = template.origin, template.shape
    center_out = (shape - 1) / 2.0
    center_tpl = origin + center_out * settings.spacing

    # Output voxel -> template voxel: random affine about the centre plus a smooth displacement.
    scale = 1.0 + rng.uniform(-settings.max_scaling, settings.max_scaling, size=3)
    matrix = _rotation(rng, settings.max_rotation_deg) @ np.diag(scale * settings.spacing)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    offsets = grid - center_out.reshape(3, 1, 1, 1).astype(np.float32)
    coords = np.einsum("ij,j...->i...", matrix.astype(np.float32), offsets)
    coords += center_tpl.reshape(3, 1, 1, 1).astype(np.float32)
    coarse = tuple(max(2, int(np.ceil(s * settings.spacing / settings.control_spacing_mm)) + 1) for s in shape)
    for axis in range(3):
        field = _smooth_field(rng, coarse, tuple(shape))
        coords[axis] += settings.displacement_mm * field / max(np.abs(field).max(), 1e-6)

    tissues, inside, label = _tissues_and_label(template, coords)

    images = {}
    for modality, means in TISSUE_INTENSITY.items():
        jitter = 1.0 + rng.uniform(-0.05, 0.05, size=3)
        signal = np.tensordot(np.asarray(means) * jitter, tissues, axes=1).astype(np.float32)
        texture = 1.0 + 0.03 * _smooth_field(rng, tuple(max(2, s // 4) for s in shape), tuple(shape))
        bias = np.exp(settings.bias_strength * _smooth_field(rng, (3, 3, 3), tuple(shape)))
        noisy = signal * texture * bias + settings.noise_std * rng.standard_normal(signal.shape).astype(np.float32)
        scaled = np.clip(noisy, 0.0, None) * rng.uniform(400.0, 1200.0)
        scaled[~inside] = 0.0  # skull-stripped, as the iSeg images are
        images[modality] = np.round(scaled).astype(np.int16)
    return images, label


def write_analyze(array: np.ndarray, spacing: float, path: Path) -> None:
    """An Analyze pair (``.hdr``/``.img``) at ``spacing`` mm, as iSeg ships its files."""
    image = nib.AnalyzeImage(array, affine=np.diag([spacing, spacing, spacing, 1.0]))
    image.header.set_zooms((spacing,) * 3)
    nib.save(image, str(path))


DEMO_FILE = re.compile(r"subject-\d+-(T1|T2|label)\.(hdr|img)|synthesis\.json")  # all a demo dataset holds


def not_a_demo_dataset(folder: Path) -> str | None:
    """What in ``folder`` a demo dataset never holds (its files named), or None: a folder this
    script may replace."""
    if not folder.is_dir():
        return "not a folder"
    others = sorted(p.name for p in folder.iterdir() if not DEMO_FILE.fullmatch(p.name))
    if others:
        return ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    if any(folder.iterdir()) and not (folder / "synthesis.json").is_file():
        return "no synthesis.json"
    return None


def build_dataset(out_dir: Path, settings: SynthesisSettings = SynthesisSettings()) -> Path:
    """Write ``subject-N-{T1,T2,label}.hdr/.img`` for N = 1..subjects into ``out_dir``.

    Reuses ``out_dir`` when it already holds a dataset built with the same settings. The data
    is written to a temporary sibling folder and renamed, so an interrupted build never leaves
    a half-written dataset behind.
    """
    out_dir = Path(out_dir)
    stamp = out_dir / "synthesis.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(settings):
        print(f"demo dataset: reusing {out_dir} ({settings.subjects} subjects)")
        return out_dir
    if out_dir.exists():  # replaced below: only a demo dataset of other settings, nothing else ever
        refusal = not_a_demo_dataset(out_dir)
        if refusal:
            raise SystemExit(f"{out_dir}: exists and is not a demo dataset of this script ({refusal}); refusing to "
                             "replace it: choose a new folder for --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    template = prepare_template(settings.spacing)
    rng = np.random.default_rng(settings.seed)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        tmp_dir = Path(tmp)
        for n in range(1, settings.subjects + 1):
            images, label = synthesize_subject(template, settings, rng)
            for modality, array in images.items():
                write_analyze(array, settings.spacing, tmp_dir / f"subject-{n}-{modality}.hdr")
            write_analyze(label, settings.spacing, tmp_dir / f"subject-{n}-label.hdr")
            print(f"demo dataset: subject-{n} {label.shape}")
        (tmp_dir / "synthesis.json").write_text(json.dumps(asdict(settings), indent=2))
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/demo/iSeg-2017-Training"))
    defaults = SynthesisSettings()
    parser.add_argument("--subjects", type=int, default=defaults.subjects)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--spacing", type=float, default=defaults.spacing, help="voxel size in mm")
    args = parser.parse_args()
    build_dataset(args.out, SynthesisSettings(subjects=args.subjects, seed=args.seed, spacing=args.spacing))


if __name__ == "__main__":
    main()
