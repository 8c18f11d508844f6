"""x4 evaluation on a folder of HR photos: hitok against bicubic, Real-ESRGAN and a CNN floor, two LR tracks.

Per image one deterministic centre crop (``crop`` px, or the largest multiple-of-16 crop of a smaller image) is
the HR ground truth; its LR is made two ways:

* ``bicubic``: MATLAB ``imresize(hr, 1/4)`` (bicubic, antialiased; :func:`hitok.bench.niqe.imresize_matlab`,
  the downscaler SR benchmarks are built with) rounded to 8 bits;
* ``realistic``: :func:`hitok.train.degrade.degrade_eval` (blur, bicubic down, noise, JPEG), its noise
  seeded from (seed, file name) so a photo's LR does not change when others join the folder.

Every method gets the same 8-bit LR and returns 8-bit RGB. Scores per method and track: PSNR-Y and
SSIM-Y with 4 px shaved (:mod:`hitok.bench.metrics`), HaarPSI of the RGB output with the same 4 px shaved
(:mod:`hitok.bench.haarpsi`), NIQE of the output with a 4 px border cropped
(:mod:`hitok.bench.niqe`; n/a below two 96 px patches), LPIPS when its weights load
(:func:`hitok.train.losses.lpips.try_lpips`), DISTS never (no implementation or weights offline) -- a metric that
cannot be computed is reported n/a with its reason, never estimated -- and wall seconds per image, timed in
this process after one untimed warm-up call per method (model load, ncnn init, tile sizing excluded).
hitok runs through :class:`hitok.Upscaler`, the tiled path ``hitok upscale`` uses, one row per
model and, for models with an LR guide, optionally one per fidelity. The "CNN floor" (:mod:`hitok.bench.floor`)
is a small plain CNN trained at the start of the run when training photos are given.

Output (``out_dir``): ``results.md``, ``results.json`` and ``panels/<image>_<track>.png``: an overview
(LR nearest x4 | methods in build order | GT, each panel labelled, at most 7 panels and 1600 px a row,
wrapping onto more rows) above the same grid of one 128x128 detail region (the most textured in GT)
shown pixel-exact at 2x (1x if too wide).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from hitok.errors import UserError, one_line
from hitok.imageio import Picture, list_images, load_rgb8

from .artefacts import BLOCK_FLAG, FLAG, FLAT_FLAG, blockiness_score, flat_noise_score, periodic_score
from .haarpsi import haarpsi
from .metrics import psnr_y, ssim_y, to_y
from .niqe import imresize_matlab, niqe

SCALE = 4
SHAVE = 4
TRACKS = ("bicubic", "realistic")
METRICS = ("psnr_y", "ssim_y", "haarpsi", "niqe", "periodic", "blocky", "flat", "lpips", "dists", "seconds")
HEADERS = {"psnr_y": "PSNR-Y (dB) ↑", "ssim_y": "SSIM-Y ↑", "haarpsi": "HaarPSI ↑", "niqe": "NIQE ↓",
           "periodic": "periodic ↓", "blocky": "blocky ↓", "flat": "flat noise ↓", "lpips": "LPIPS ↓",
           "dists": "DISTS ↓", "seconds": "s / image"}
DISTS_NA = "no DISTS implementation in hitok (it needs ImageNet VGG16 and DISTS weights; none offline)"
DETAIL = 128  # side of the full-resolution detail region in the panels
MAX_ROW = 1600  # px, widest panel row
MAX_PANELS = 7  # panels a row; more wrap onto the next row so that every label stays readable


class Method(Protocol):
    """An x4 upscaler: ``(h, w, 3) uint8 -> (4h, 4w, 3) uint8``; ``info`` says how it ran."""

    name: str
    info: str

    def __call__(self, lr: np.ndarray) -> np.ndarray: ...


def _matlab_resize(img: np.ndarray, scale: float) -> np.ndarray:
    chans = [imresize_matlab(img[..., c].astype(np.float64), scale) for c in range(img.shape[2])]
    return np.clip(np.round(np.stack(chans, -1)), 0, 255).astype(np.uint8)  # (H', W', 3)


class Bicubic:
    """MATLAB ``imresize(lr, 4)``: the baseline SR tables quote."""

    name = "bicubic"
    info = "bicubic: MATLAB imresize x4 (numpy, 1 thread)"

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return _matlab_resize(lr, SCALE)


class HitokMethod:
    """A hitok model through the user's path: ``Upscaler.upscale_picture`` with tile auto.

    fidelity: weight of the faithful image (models/restorer.py, models/guide.py), None = the model's default;
    texture: the texture dial (models/sr_model.py HiTok.restore), None = the model's default.
    """

    def __init__(self, model: torch.nn.Module, name: str = "hitok", device: str | torch.device = "cpu",
                 model_id: str = "", source: str = "", tile: int | None = None, color_fix: bool = True,
                 fidelity: float | None = None, texture: float | None = None):
        from hitok.upscaler import Upscaler

        self.upscaler = Upscaler(model, str(device) if not isinstance(device, torch.device) else device,
                                 model_id=model_id, color_fix=color_fix, fidelity=fidelity, texture=texture)
        self.name, self.tile, self.source = name, tile, source or "model"
        self.plan = None  # tile plan of the last call, for the report

    @property
    def info(self) -> str:
        from hitok.device import precision_name

        u, p = self.upscaler, self.plan
        texture = f"texture {u.texture:g}, " if getattr(u.model, "texture_restorer", None) is not None else ""
        tiles = f"tile {'auto' if self.tile is None else self.tile}" + (
            f" -> {p.tile_h}x{p.tile_w} LR px, overlap {p.overlap}, {len(p)} tile(s)" if p is not None else "")
        return (f"{self.name}: {self.source} (id {u.model_id or '-'}), {u.device} {precision_name(u.dtype)}, "
                f"fidelity {u.fidelity:g}, {texture}colour fix {'on' if u.color_fix else 'off'}, {tiles}, "
                f"torch threads {torch.get_num_threads()}")

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        out, self.plan = self.upscaler.upscale_picture(Picture(pixels=lr), tile=self.tile)
        return out.pixels


class NoTokensMethod:
    """The token ablation of an LR-guided model (models/guide.py) at fidelity 1: the guide gets bicubic(LR) in
    place of the token image and zeros in place of the token features, nothing retrained. Its distance to the
    model's default row is what the token path (most of the model's operations) adds to the faithful image."""

    def __init__(self, model: torch.nn.Module, name: str, color_fix: bool = True):
        self.model, self.name, self.color_fix = model, name, color_fix
        self.info = (f"{name}: the LR guide fed bicubic(LR) and zero token features (token path skipped), "
                     f"fidelity 1, colour fix {'on' if color_fix else 'off'}, one tile, fp32")

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        from hitok.models import colorfix

        guide = self.model.tokenizer.decoder.guide
        cfg = self.model.config.tokenizer
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
        device = next(self.model.parameters()).device
        x = x.to(device)
        per_token = cfg.patch // SCALE  # LR pixels per token side
        feats = x.new_zeros(1, cfg.dec_dim, x.shape[-2] // per_token, x.shape[-1] // per_token)
        with torch.inference_mode():
            sr = F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False)
            y = guide(sr, feats, x, 1.0)
            y = colorfix.color_fix(y, x) if self.color_fix else y
        return (y[0].clamp(0, 1).permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()


class RealESRGANMethod:
    """Real-ESRGAN x4plus through ncnn on the CPU (:mod:`hitok.bench.realesrgan`)."""

    name = "Real-ESRGAN"

    def __init__(self, model_dir: str | None = None, threads: int | None = None):
        from .realesrgan import RealESRGAN, find_model_files

        threads = threads or torch.get_num_threads()
        param, bin_ = find_model_files(model_dir)
        self.net = RealESRGAN(param, bin_, threads=threads)
        self.info = f"Real-ESRGAN: x4plus ncnn CPU ({param.parent}), ncnn threads {threads}, tile {self.net.tile}"

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return self.net(lr)


def build_methods(models: Sequence[str | None], realesrgan: bool = True, device: str = "cpu",
                  realesrgan_dir: str | None = None, threads: int | None = None,
                  tile: int | None = None, raw_rows: bool = False, fidelities: Sequence[float] = (),
                  floor_data: str | Path | None = None, floor_steps: int = 1000, textures: Sequence[float] = (),
                  log: Callable[[str], None] | None = None) -> tuple[list[Method], list[str]]:
    """bicubic, Real-ESRGAN (when wanted and found), the CNN floor (when ``floor_data`` is given) and the hitok
    rows per model spec (name, path, None = default), in that order.

    tile: hitok's LR tile side; None = auto, what ``hitok upscale`` does by default.
    fidelities: for a model with an LR guide, one more row "<name> fidelity <v>" per value (colour fix on, as the
    default row); a model without one gets a note instead.
    textures: for a model with a texture restorer, one more row "<name> texture <v>" per value.
    raw_rows: also a "<name> raw" row per model without the colour fix (models/colorfix.py), so the table
    shows what the fix adds, and for a guided model a "<name> fidelity 0 raw" row: the tokens alone.
    floor_data: folder of training photos for :func:`hitok.bench.floor.train_floor`, trained here for
    ``floor_steps`` steps after the models have loaded (a wrong model path fails before minutes of training);
    log: its progress lines.

    Returns (methods, notes); a Real-ESRGAN that cannot run becomes a note, not an error.
    """
    from hitok import model_store

    specs = list(models) or [None]
    loaded = [model_store.load(spec, device) for spec in specs]
    methods: list[Method] = [Bicubic()]
    notes: list[str] = []
    if realesrgan:
        try:
            methods.append(RealESRGANMethod(realesrgan_dir, threads))
        except Exception as exc:  # noqa: BLE001 - missing files, no ncnn, a corrupt file: all mean "skip"
            notes.append(f"Real-ESRGAN skipped: {one_line(exc)}")
    if floor_data is not None:
        from .floor import train_floor

        methods.append(train_floor(floor_data, steps=floor_steps, threads=threads, log=log))
    stems = [m.path.stem for m in loaded]
    for m in loaded:
        name = "hitok" if len(loaded) == 1 else f"hitok:{m.path.stem}"
        if stems.count(m.path.stem) > 1:
            name = f"hitok:{m.path.stem}@{m.id[:6]}"
        taken = [x.name for x in methods]
        if name in taken:  # the same file given twice: keep the rows apart
            name = f"{name}#{sum(t == name or t.startswith(name + '#') for t in taken) + 1}"

        def row(label: str, **kw) -> HitokMethod:
            return HitokMethod(m.model, label, device, m.id, str(m.path), tile, **kw)

        methods.append(row(name))
        guided = m.model.guided
        if guided:
            methods += [row(f"{name} fidelity {v:g}", fidelity=v) for v in fidelities]
        elif fidelities:
            notes.append(f"{name}: no LR guide in this model, so no fidelity rows (its fidelity is always 0)")
        if m.model.texture_restorer is not None:
            methods += [row(f"{name} texture {v:g}", texture=v) for v in textures]
        elif textures:
            notes.append(f"{name}: no texture restorer in this model, so no texture rows")
        if raw_rows:
            methods.append(row(f"{name} raw", color_fix=False))
            if guided:
                methods.append(row(f"{name} fidelity 0 raw", color_fix=False, fidelity=0.0))
            if m.model.tokenizer.decoder.guide is not None:
                methods.append(NoTokensMethod(m.model, f"{name} no tokens"))
            elif m.model.restorer is not None:
                notes.append(f"{name}: at fidelity 1 the model runs its restorer alone (no token path); "
                             f"'{name} fidelity 0 raw' is the tokens alone")
    return methods, notes


# -- data -------------------------------------------------------------------------------------------
def centre_crop(img: np.ndarray, crop: int) -> np.ndarray | None:
    """crop x crop from the centre; per side the largest multiple of 16 when the image is smaller."""
    h, w = (min(crop, s // 16 * 16) for s in img.shape[:2])
    if h == 0 or w == 0:
        return None
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[top : top + h, left : left + w]


def image_seed(seed: int, name: str) -> int:
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def make_lr(hr: np.ndarray, track: str, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 HR -> (H/4, W/4, 3) uint8 LR for one track."""
    if track == "bicubic":
        return _matlab_resize(hr, 1.0 / SCALE)
    from hitok.train.degrade import degrade_eval

    # A crop of a decoded file can be a read-only view; torch wants its own writable copy.
    x = torch.from_numpy(np.array(hr)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    lr = degrade_eval(x, seed, SCALE)  # (3, H/4, W/4), 8-bit valued
    return (lr.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


# -- results ----------------------------------------------------------------------------------------
@dataclass
class Score:
    image: str
    track: str
    method: str
    psnr_y: float
    ssim_y: float
    haarpsi: float
    niqe: float | None
    lpips: float | None
    dists: float | None
    seconds: float
    periodic: float | None = None  # bench/artefacts.py: a regular pattern the photo lacks scores above FLAG
    blocky: float | None = None  # bench/artefacts.py: pixelation on the LR grid scores above BLOCK_FLAG
    flat: float | None = None  # bench/artefacts.py: grain or mottle where the photo is flat scores above FLAT_FLAG


@dataclass
class EvalResults:
    settings: dict
    methods: list[str]
    method_info: list[str]
    images: list[str]
    scores: list[Score] = field(default_factory=list)
    hr_niqe: dict[str, float | None] = field(default_factory=dict)  # NIQE of the GT crops, for reference
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a (for some/all)
    notes: list[str] = field(default_factory=list)

    def rows(self, track: str, method: str) -> list[Score]:
        return [s for s in self.scores if s.track == track and s.method == method]

    def rows_of(self, track: str) -> list[Score]:
        return [s for s in self.scores if s.track == track]

    def mean(self, track: str, method: str) -> dict[str, float | None]:
        """Mean over images of each metric; None where no image has it."""
        rows = self.rows(track, method)
        out: dict[str, float | None] = {}
        for m in METRICS:
            vals = [getattr(r, m) for r in rows if getattr(r, m) is not None]
            out[m] = float(np.mean(vals)) if vals else None
        return out

    def flagged(self) -> list[str]:
        """One line per method and artefact with the crops past its flag (bench/artefacts.py FLAG, BLOCK_FLAG,
        FLAT_FLAG)."""
        lines = []
        for m in self.methods:
            for metric, flag, what in (("periodic", FLAG, "a regular pattern"), ("blocky", BLOCK_FLAG, "pixelated"),
                                       ("flat", FLAT_FLAG, "grain on flat areas")):
                bad = [f"{s.image} ({s.track}, {getattr(s, metric):.1f})" for s in self.scores
                       if s.method == m and getattr(s, metric) is not None and getattr(s, metric) > flag]
                if bad:
                    lines.append(f"- **{m}: {what}** on {len(bad)} crop(s): {', '.join(bad)}")
        return lines

    def to_json(self) -> dict:
        means = {t: {m: self.mean(t, m) for m in self.methods} for t in TRACKS}
        return _finite({"settings": self.settings, "methods": self.methods, "method_info": self.method_info,
                        "images": self.images, "mean": means, "hr_niqe": self.hr_niqe,
                        "per_image": [asdict(s) for s in self.scores], "unavailable": self.unavailable,
                        "notes": self.notes})

    def to_markdown(self) -> str:
        s = self.settings
        lines = ["# hitok x4 evaluation", "",
                 f"HR folder `{s['hr_dir']}`, {len(self.images)} image(s), centre crop {s['crop']} px "
                 f"(LR {s['crop'] // SCALE} px), seed {s['seed']}, torch threads {s['torch_threads']}.", "",
                 "LR tracks: **bicubic** = MATLAB imresize 1/4 (bicubic, antialiased), 8-bit; **realistic** = "
                 "degrade_eval (Gaussian blur σ1.2, bicubic ↓4, noise σ5/255, JPEG q70), seeded per image.", "",
                 "Methods:", *(f"- {i}" for i in self.method_info), ""]
        cols = " | ".join(HEADERS[m] for m in METRICS)
        rule = "|---" + "|---:" * len(METRICS) + "|"
        for t in TRACKS:
            lines += [f"## Track: {t} (mean over {len(self.images)} image(s))", "", f"| method | {cols} |", rule]
            lines += [_md_row([m], self.mean(t, m)) for m in self.methods]
            ref = [v for v in self.hr_niqe.values() if v is not None]
            lines += [_md_row(["GT (HR crop)"], {"niqe": float(np.mean(ref)) if ref else None}), ""]
            lines += ["Per image:", "", f"| image | method | {cols} |", "|---" + rule]
            for image in self.images:
                rows = [r for r in self.rows_of(t) if r.image == image]
                lines += [_md_row([image, r.method], asdict(r)) for r in rows]
                lines.append(_md_row([image, "GT (HR crop)"], {"niqe": self.hr_niqe.get(image)}))
            lines.append("")
        lines += ["## Notes", ""]
        lines += [f"- {k.upper()} n/a: {why}" for k, why in self.unavailable.items()]
        lines += [f"- {n}" for n in self.notes]
        lines += ["- HaarPSI: Reisenhofer et al. 2018, colour version (YIQ, C 30, α 4.2, 3 Haar scales, 2x2 mean "
                  "subsampling first), on the RGB output with 4 px shaved; 1 = identical to GT.",
                  "- NIQE: BT.601 Y, 4 px border cropped, pristine model of Mittal et al. 2013 (lower = more "
                  "natural); the GT row is the HR crops' own score.",
                  f"- periodic: the strongest isolated spectral peak of the output beyond the photo's "
                  f"(bench/artefacts.py); about 2-5 for honest upscalers, above {FLAG:g} a regular pattern "
                  f"(cross-hatch, checkerboard) the photo lacks.",
                  f"- blocky: how much more the output steps across the borders of the LR pixels' 4x4 cells than "
                  f"inside them, over the photo's; about 1-1.3 for honest upscalers, above {BLOCK_FLAG:g} pixelated.",
                  f"- flat noise: the output's detail (grey levels RMS) where the photo is flat; n/a on a crop "
                  f"without flat areas; Real-ESRGAN up to ~0.8, above {FLAT_FLAG:g} grain or mottle a person sees.",
                  *self.flagged(),
                  "- s / image: wall seconds per LR input in this process, after one untimed warm-up call."]
        return "\n".join(lines) + "\n"


def _md_row(labels: list[str], values: dict) -> str:
    """A table row; metrics missing from ``values`` (GT rows: only NIQE) print as a dash."""
    cells = [fmt_metric(m, values[m]) if m in values else "—" for m in METRICS]
    return "| " + " | ".join(labels + cells) + " |"


def fmt_metric(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if metric in ("psnr_y", "periodic", "blocky", "flat"):
        return f"{v:.2f}"
    return f"{v:.4f}" if metric in ("ssim_y", "haarpsi", "lpips", "dists") else f"{v:.3f}"


def _finite(obj):
    """inf/NaN -> None so that results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# -- panels -----------------------------------------------------------------------------------------
def detail_box(hr: np.ndarray, side: int = DETAIL) -> tuple[int, int, int]:
    """(top, left, side) of the most textured side x side window of GT (largest Laplacian energy)."""
    y = to_y(hr)
    side = min(side, *y.shape)
    lap = np.abs(4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:])
    energy = np.pad(lap, 1).cumsum(0).cumsum(1)
    energy = np.pad(energy, ((1, 0), (1, 0)))  # (H+1, W+1) summed-area table
    best, box = -1.0, (0, 0)
    step = max(1, side // 4)
    for t in range(0, y.shape[0] - side + 1, step):
        for l in range(0, y.shape[1] - side + 1, step):
            e = energy[t + side, l + side] - energy[t, l + side] - energy[t + side, l] + energy[t, l]
            if e > best:
                best, box = e, (t, l)
    return box[0], box[1], side


def _labelled(img: Image.Image, text: str) -> Image.Image:
    """``img`` under an 18 px caption; a caption wider than the panel is set smaller (down to 9 px) to fit."""
    for size in range(13, 8, -1):
        font = ImageFont.load_default(size=size)
        if font.getlength(text) <= img.width - 6:
            break
    out = Image.new("RGB", (img.width, img.height + 18), "black")
    out.paste(img, (0, 18))
    ImageDraw.Draw(out).text((3, 2), text, fill="white", font=font)
    return out


def _row(panels: list[Image.Image], gap: int = 4) -> Image.Image:
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
                    "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def _stack(rows: list[Image.Image], gap: int) -> Image.Image:
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)),
                    "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + gap
    return out


def side_by_side(panels: list[tuple[str, np.ndarray]], box: tuple[int, int, int]) -> Image.Image:
    """Labelled overview grid (scaled to fit MAX_ROW) over the same grid of the detail region at an integer zoom.

    At most MAX_PANELS panels a row, in the given order; more wrap onto the next row.
    """
    cols = min(len(panels), MAX_PANELS)
    h, w = panels[0][1].shape[:2]
    pw = min(w, (MAX_ROW - 4 * (cols - 1)) // cols)
    ph = max(1, round(h * pw / w))
    t, l, side = box
    zoom = max(1, (MAX_ROW - 4 * (cols - 1)) // (cols * side))
    zoom = min(zoom, 2)
    top, bottom = [], []
    for label, img in panels:
        small = Image.fromarray(img).resize((pw, ph), Image.LANCZOS)
        f = pw / w
        ImageDraw.Draw(small).rectangle([l * f, t * f, (l + side) * f - 1, (t + side) * f - 1], outline="yellow")
        top.append(_labelled(small, label))
        crop = Image.fromarray(img[t : t + side, l : l + side]).resize((side * zoom, side * zoom), Image.NEAREST)
        bottom.append(_labelled(crop, f"{label.split('  ')[0]}  detail {zoom}x"))

    def grid(tiles: list[Image.Image]) -> Image.Image:
        return _stack([_row(tiles[i : i + cols]) for i in range(0, len(tiles), cols)], gap=4)

    return _stack([grid(top), grid(bottom)], gap=6)


def figure_methods(names: Sequence[str]) -> list[str]:
    """The README figure's columns: bicubic, Real-ESRGAN (if run), the first hitok model's default row and its
    last '... texture T' row if there is one (the detail setting: sweep it last), else its '... fidelity 0' row."""
    keep = [n for n in names if n in ("bicubic", "Real-ESRGAN")]
    first = next((n for n in names if n.startswith("hitok") and " " not in n), None)
    if first is not None:
        textured = [n for n in names if n.startswith(f"{first} texture ")]
        detail_end = textured[-1] if textured else f"{first} fidelity 0"
        keep += [n for n in names if n in (first, detail_end)]
    return keep


def comparison_figure(crops: dict[str, list[tuple[str, np.ndarray]]], zoom: int = 2) -> Image.Image:
    """track -> [(label, detail crop)] -> one labelled row per track, crops at ``zoom`` x (nearest)."""
    rows = []
    for track, items in crops.items():
        tiles = [_labelled(Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.NEAREST),
                           f"{label}  ({'clean' if track == 'bicubic' else 'compressed'} LR)") for label, img in items]
        rows.append(_row(tiles))
    return _stack(rows, gap=6)


# -- the run ----------------------------------------------------------------------------------------
def evaluate(hr_dir: str | Path, methods: Sequence[Method], crop: int = 512, out_dir: str | Path | None = None,
             max_images: int | None = None, seed: int = 0, lpips: bool = True, notes: Sequence[str] = (),
             log: Callable[[str], None] | None = None, figure: str | Path | None = None,
             figure_image: str | None = None) -> EvalResults:
    """Score every method on both tracks of every image in ``hr_dir``; write reports to ``out_dir`` if given.

    notes: lines for the report's notes (e.g. why Real-ESRGAN was skipped); log: per-score progress lines.
    figure: also write the README's comparison figure there (:func:`comparison_figure`): the detail region of
    ``figure_image`` (a file name; default the first image) on both tracks, columns :func:`figure_methods` + GT.
    """
    if crop < 16 or crop % 16:
        raise UserError(f"--crop {crop}: must be a positive multiple of 16 (LR side a multiple of 4)")
    if not methods:
        raise UserError("no methods to evaluate")
    hr_dir = Path(hr_dir)
    files = list_images(hr_dir, max_images=max_images)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "panels").mkdir(parents=True, exist_ok=True)
    log = log or (lambda _msg: None)

    lpips_net, why = None, "not requested"
    if lpips:
        from hitok.train.losses.lpips import try_lpips

        lpips_net, why = try_lpips()
    res = EvalResults(settings={"hr_dir": str(hr_dir), "crop": crop, "seed": seed, "shave": SHAVE,
                                "niqe_crop_border": SHAVE, "torch_threads": torch.get_num_threads()},
                      methods=[m.name for m in methods], method_info=[m.info for m in methods], images=[],
                      notes=list(notes))
    if lpips_net is None:
        res.unavailable["lpips"] = why
    res.unavailable["dists"] = DISTS_NA

    fig_cols = figure_methods([m.name for m in methods])
    fig_crops: dict[str, list[tuple[str, np.ndarray]]] = {}
    if figure is not None and figure_image is not None and figure_image not in {p.name for p in files}:
        raise UserError(f"--figure-image {figure_image}: not among the images of {hr_dir}")

    warm = np.full((16, 16, 3), 128, np.uint8)
    for m in methods:  # one-time costs (weights, ncnn init, tile sizing) stay out of the timings
        m(warm)

    for path in files:
        try:
            hr = centre_crop(load_rgb8(path), crop)
        except UserError as exc:
            res.notes.append(f"skipped {path.name}: {exc}")
            continue
        if hr is None:
            res.notes.append(f"skipped {path.name}: smaller than 16 px")
            continue
        name = path.name
        res.images.append(name)
        res.hr_niqe[name] = _niqe_or_none(hr, res)
        box = detail_box(hr)
        in_figure = figure is not None and name == (figure_image or files[0].name)
        for track in TRACKS:
            lr = make_lr(hr, track, image_seed(seed, name))
            panels = [("LR (nearest x4)", np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1))]
            baseline = _matlab_resize(lr, SCALE)  # bicubic: its own imaging of stripes is no artefact
            for m in methods:
                start = time.perf_counter()
                sr = m(lr)
                seconds = time.perf_counter() - start
                if sr.shape != hr.shape or sr.dtype != np.uint8:
                    raise RuntimeError(f"{m.name} returned {sr.dtype} {sr.shape} for a {lr.shape} input")
                score = Score(name, track, m.name, psnr_y(sr, hr, SHAVE), ssim_y(sr, hr, SHAVE),
                              haarpsi(hr, sr, SHAVE), _niqe_or_none(sr, res), _lpips(lpips_net, sr, hr), None,
                              seconds, _periodic_or_none(sr, hr, baseline, res), blockiness_score(sr, hr),
                              flat_noise_score(sr, hr))
                res.scores.append(score)
                log(f"{name} {track:9s} {m.name:14s} PSNR-Y {score.psnr_y:6.2f}  HaarPSI {score.haarpsi:.4f}  "
                    f"{seconds:7.2f} s")
                niqe_txt = f"  NIQE {score.niqe:.2f}" if score.niqe is not None else ""
                panels.append((f"{m.name}  {score.psnr_y:.2f} dB{niqe_txt}", sr))
                if in_figure and m.name in fig_cols:
                    t, l, side = box
                    fig_crops.setdefault(track, []).append((m.name, sr[t:t + side, l:l + side]))
            panels.append(("GT", hr))
            if in_figure:
                t, l, side = box
                fig_crops[track].append(("ground truth", hr[t:t + side, l:l + side]))
            if out is not None:
                side_by_side(panels, box).save(out / "panels" / f"{path.stem}_{track}.png")
    if not res.images:
        raise UserError(f"no usable images in {hr_dir}")
    res.method_info = [m.info for m in methods]  # now with the tile plans actually used
    if fig_crops:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        comparison_figure(fig_crops).save(figure)
    if out is not None:
        (out / "results.md").write_text(res.to_markdown(), encoding="utf-8")
        (out / "results.json").write_text(json.dumps(res.to_json(), indent=1), encoding="utf-8")
    return res


def _periodic_or_none(sr: np.ndarray, hr: np.ndarray, baseline: np.ndarray, res: EvalResults) -> float | None:
    try:
        return periodic_score(sr, hr, baseline)
    except ValueError as exc:  # smaller than one window
        res.unavailable.setdefault("periodic", str(exc))
        return None


def _niqe_or_none(img: np.ndarray, res: EvalResults) -> float | None:
    try:
        return niqe(img, crop_border=SHAVE)
    except ValueError as exc:  # too small for two 96 px patches
        res.unavailable.setdefault("niqe", f"{exc} (after the 4 px border; a crop of 208 px or more is scored)")
        return None


def _lpips(net, sr: np.ndarray, hr: np.ndarray) -> float | None:
    if net is None:
        return None

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)

    with torch.inference_mode():
        return float(net(t(sr), t(hr))[0])
