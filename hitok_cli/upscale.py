"""Image file -> x4 image file: the library function behind ``hitok upscale`` and ``hitok batch``.

The photo's way (docs in /work/shared/DESIGN.md): read (imageio) -> RGB float tensor -> tiled
model inference (tiling; each tile is ``model.upscale(lr, active_groups=M, fix_colors=..., fidelity=w)``, i.e.
generator -> top-1 tokens -> decoder with the first M groups, the paper's Eq. 4 used as a "detail"
control, and the LR guide at weight w (models/guide.py) -> the LR colour fix of models/colorfix.py if on)
-> alpha upscaled on its own with bicubic and re-attached -> grey input back to grey -> write
atomically with the original ICC/EXIF (imageio).

Reduced precision (fp16/bf16) runs under autocast; a tile whose output holds NaN/inf is re-run
in fp32 and the rest of the image stays in fp32 (the user gets one warning, not a black image).

Windowed models (``model.attention_window`` > 0, the ``small`` preset) are tiled on the window
grid: tiles start on multiples of a window, so every tile puts its windows where a whole-image
pass puts them and tiled output equals the whole-image output beyond the model's reach
(:func:`receptive_field`) from a tile edge; their cost is linear in a tile's pixels, so --tile
auto sizes their tiles by memory (tiling.AUTO_MAX_TOKENS_WINDOWED).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import numpy as np
import torch
from PIL import Image

from hitok.models import colorfix

from . import tiling
from .device import precision_name
from .errors import UserError
from .imageio import DEFAULT_MAX_PIXELS, FORMAT_SUFFIX, SUFFIX_FORMAT, Picture, read_image, write_image

FORMAT_CHOICES = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
DEFAULT_OVERLAP = 16  # LR pixels; 64 HR pixels of raised-cosine blend between neighbouring tiles
# Luma weights (ITU-R BT.601, as Pillow's "L" conversion) to bring a grey photo back to grey.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _conv_reach(widths: tuple[int, ...], blocks: tuple[int, ...], up: bool) -> float:
    """Reach (one side, pixels of the full-resolution level) of models/convblocks.py's ConvDown (up=False)
    or ConvUp (up=True): a 3x3 conv at level i reaches one element (2**i px), a ResBlock holds two, and
    each level change one resampling conv (at the finer level going down, the coarser going up)."""
    reach = 1.0  # the 3x3 conv at full resolution (ConvDown's first, ConvUp's last)
    last = len(widths) - 1
    for i, b in enumerate(blocks):
        resample = (i > 0) if up else (i < last)
        reach += (2 * b + resample) * 2**i
    return reach


def receptive_field(model: torch.nn.Module, fix_colors: bool = False) -> int | None:
    """How far (LR pixels, one side) an input pixel can change the output of a windowed model, or None
    when some attention is global (then every pixel of a tile can, and only the blend hides seams).

    Shifted windows carry information at most half a window further per block (depth x window/2
    tokens per trunk, across a window-aligned tile edge); conv stems/heads add their kernels' reach, and
    fix_colors the colour fix's (models/colorfix.py)."""
    window = getattr(model, "attention_window", 0)
    if not window:
        return None
    g, t = model.config.generator, model.config.tokenizer
    lr_per_token = g.lr_patch
    lr_per_gen_token = g.lr_patch * g.token_stride  # a strided generator's tokens cover s x s grid cells
    gen = (_conv_reach(g.conv_widths, g.conv_blocks, up=False) if g.conv_widths else 0) \
        + g.depth * g.window / 2 * lr_per_gen_token \
        + (_conv_reach(g.up_widths, g.up_blocks, up=True) * lr_per_token if g.up_widths else 0)
    dec_hr = _conv_reach(t.conv_widths, t.dec_conv_blocks, up=True) if t.conv_widths else 0  # HR pixels
    dec = t.dec_depth * t.window / 2 * lr_per_token + dec_hr / model.scale
    guide = model.tokenizer.decoder.guide
    if guide is not None:  # joins after the trunk: a 3x3 fuse conv over the trunk's output, or the LR guide's CNN
        trunk = t.dec_depth * t.window / 2 * lr_per_token
        dec = max(trunk + lr_per_token, guide.reach * lr_per_token) + dec_hr / model.scale \
            + colorfix.reach(0) + 1  # and its back-projection: the bicubic taps down and up
    return int(-(-(gen + dec) // 1)) + (colorfix.reach() if fix_colors else 0)


def output_format(path: Path) -> str | None:
    return SUFFIX_FORMAT.get(path.suffix.lower())


def resolve_output(inp: Path, out: Path | None, fmt: str = "same") -> tuple[Path, str]:
    """(output path, Pillow format). Default: NAME_x4.EXT beside the input, never ``.png.png``."""
    wanted = FORMAT_CHOICES.get(fmt) if fmt != "same" else None
    if fmt != "same" and wanted is None:
        raise UserError(f"unknown --format {fmt!r}: use png, jpg, webp or same")
    if out is not None:
        from_suffix = output_format(out)
        if wanted and from_suffix and from_suffix != wanted:
            raise UserError(f"-o {out} has a {out.suffix} suffix but --format is {fmt}")
        chosen = wanted or from_suffix
        if chosen is None:
            raise UserError(f"-o {out}: cannot tell the image format from {out.suffix or 'no suffix'}; "
                            "use .png, .jpg, .webp or .tif, or pass --format")
        return out, chosen
    source = output_format(inp)
    chosen = wanted or source or "PNG"  # "same" for GIF & co.: PNG keeps every pixel
    # Keep the user's own spelling (.JPEG stays .JPEG) when the format is unchanged.
    suffix = inp.suffix if source == chosen else FORMAT_SUFFIX[chosen]
    return inp.with_name(f"{inp.stem}_x4{suffix}"), chosen


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(inp: Path, out: Path, overwrite: bool) -> None:
    if same_file(inp, out):
        raise UserError(f"refusing to write over the input file {inp}")
    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name with -o")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")


@dataclass
class UpscaleResult:
    input: str
    output: str
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    format: str
    bits: int
    device: str
    precision: str
    tile: int
    tiles: int
    overlap: int
    detail: int
    fidelity: float
    color_fix: bool
    model_id: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Upscaler:
    """One loaded model on one device; reused for every file of a batch."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 detail: int | None = None, model_id: str = "", fix_colors: bool = True,
                 fidelity: float | None = None):
        groups = model.config.tokenizer.groups
        if detail is not None and not 1 <= detail <= groups:
            raise UserError(f"--detail {detail}: this model has {groups} token groups; use 1..{groups}")
        if fidelity is not None and not 0 <= fidelity <= 1:
            raise UserError(f"--fidelity {fidelity}: must be between 0 and 1")
        if fidelity and not model.guided:
            raise UserError(f"--fidelity {fidelity}: this model's decoder does not see the input (no LR guide); "
                            "only 0 is possible")
        # channels-last on the CPU: oneDNN's convolutions run without layout reorders, measured 1.3x (fp32) and
        # 1.44x (bf16) faster for the default model per 128x128 input (docs/benchmarks.md); outputs unchanged.
        # Module.to converts the caller's model in place (eval's rows share one model; harmless, same numbers).
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format).eval()
        self.device, self.dtype, self.model_id = device, dtype, model_id
        self.detail = detail or groups
        self.fix_colors = fix_colors
        self.fidelity = model.config.fidelity if fidelity is None else float(fidelity)
        self.warnings: list[str] = []
        self._bytes_per_pixel: float | None = None
        # Tile granularity: a token, or a whole attention window so that windows line up across tiles.
        self.window = getattr(model, "attention_window", 0)
        self.grid = model.lr_align * (self.window or 1)

    @property
    def default_overlap(self) -> int:
        """DEFAULT_OVERLAP, or less when a windowed model's receptive field is shorter (then the overlap,
        on the window grid, covers it and tiles agree exactly where they are blended)."""
        reach = receptive_field(self.model, self.fix_colors)
        if reach is None:
            return DEFAULT_OVERLAP
        return min(DEFAULT_OVERLAP, tiling.round_up(reach, self.grid))

    # -- per tile ---------------------------------------------------------------------------------
    def _forward(self, lr: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        with torch.inference_mode():
            kw = dict(active_groups=self.detail, fix_colors=self.fix_colors, fidelity=self.fidelity)
            if dtype == torch.float32:
                return self.model.upscale(lr, **kw)
            with torch.autocast(self.device.type, dtype=dtype):
                return self.model.upscale(lr, **kw).float()

    def tile_fn(self, lr: torch.Tensor) -> torch.Tensor:
        lr = lr.to(self.device).contiguous(memory_format=self.memory_format)
        out = self._forward(lr, self.dtype)
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            self.warnings.append(f"{precision_name(self.dtype)} produced NaN/inf; re-ran in fp32")
            self.dtype = torch.float32
            out = self._forward(lr, self.dtype)
        if not torch.isfinite(out).all():
            raise UserError("the model produced NaN/inf even in fp32; the model file is probably broken")
        return out

    def pick_tile(self, lr_shape: tuple[int, int]) -> int:
        """--tile auto: the largest aligned tile that fits the device's free memory."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = tiling.measure_bytes_per_pixel(self.tile_fn, self.device, self.grid, self.model)
        free = tiling.free_memory_bytes(self.device)
        return tiling.auto_tile(self._bytes_per_pixel, free, self.device, self.grid, max(lr_shape),
                                windowed=bool(self.window), token=self.model.lr_align)

    # -- per picture ------------------------------------------------------------------------------
    def upscale_picture(self, pic: Picture, tile: int | None = None, overlap: int | None = None,
                        progress: tiling.Progress | None = None) -> tuple[Picture, tiling.TilePlan]:
        """x4 the picture; returns (picture, the tile plan that was used in the end).

        tile / overlap in LR pixels, None = auto / :attr:`default_overlap`; windowed models round both
        up to the window grid."""
        scale, align, grid = self.model.scale, self.model.lr_align, self.grid
        overlap = self.default_overlap if overlap is None else overlap
        rgb = pic.pixels if not pic.grey else np.repeat(pic.pixels, 3, axis=2)
        lr = torch.from_numpy(rgb.astype(np.float32) / pic.max_value).permute(2, 0, 1)[None]  # (1, 3, h, w)
        h, w = lr.shape[-2:]
        balance = not tile  # an auto tile is a ceiling: even the tiles out under it; a given one is kept
        tile = tile or self.pick_tile((h, w))
        if tile % align:
            raise UserError(f"--tile {tile}: must be a multiple of {align} (the model's token size in LR pixels)")
        out_dtype = np.uint16 if pic.bits == 16 else np.uint8

        def on_retry(old: int, new: int) -> None:
            self.warnings.append(f"out of memory with tile {old}; retried with tile {new}")

        try:
            hr, used = tiling.tiled_apply_with_retry(self.tile_fn, lr, scale, tile, overlap, grid, self.device,
                                                     out_dtype if not pic.grey else np.float32, progress, on_retry,
                                                     balance)
        except Exception as exc:  # noqa: BLE001
            if tiling.is_out_of_memory(exc):
                raise UserError(f"out of memory even with tile {4 * grid}; try --device cpu") from None
            raise
        if pic.grey:
            grey = (hr @ _LUMA)[..., None]  # (H, W, 1)
            hr = (grey * pic.max_value + 0.5).astype(out_dtype)
        alpha = upscale_alpha(pic.alpha, scale) if pic.alpha is not None else None
        plan = tiling.plan_tiles(tiling.round_up(h, grid), tiling.round_up(w, grid), used, overlap, grid, balance)
        return Picture(pixels=hr, alpha=alpha, icc=pic.icc, exif=pic.exif, source_format=pic.source_format), plan

    def upscale_file(self, inp: Path, out: Path, fmt: str, quality: int | None = None,
                     tile: int | None = None, overlap: int | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS,
                     progress: tiling.Progress | None = None) -> UpscaleResult:
        """Read ``inp``, upscale, write ``out`` (Pillow format ``fmt``) atomically."""
        start = time.perf_counter()
        self.warnings = []
        pic = read_image(inp, max_pixels=max_pixels)
        result, plan = self.upscale_picture(pic, tile, overlap, progress)
        warnings = pic.warnings + self.warnings
        warnings += write_image(out, result, fmt, quality)
        return UpscaleResult(
            input=str(inp), output=str(out), input_size=pic.size, output_size=result.size, format=fmt,
            bits=result.bits if fmt in ("PNG", "TIFF") else 8, device=str(self.device),
            precision=precision_name(self.dtype), tile=max(plan.tile_h, plan.tile_w), tiles=len(plan),
            overlap=plan.overlap, detail=self.detail, fidelity=self.fidelity, color_fix=self.fix_colors,
            model_id=self.model_id, seconds=round(time.perf_counter() - start, 3), warnings=warnings)


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Alpha on its own, bicubic: the model is trained on photos, not on masks."""
    h, w = alpha.shape
    if alpha.dtype == np.uint8:
        return np.asarray(Image.fromarray(alpha).resize((w * scale, h * scale), Image.BICUBIC))
    big = Image.fromarray(alpha.astype(np.float32)).resize((w * scale, h * scale), Image.BICUBIC)  # mode "F"
    return np.clip(np.asarray(big), 0, 65535).round().astype(np.uint16)
