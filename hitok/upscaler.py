"""Photo -> x4 photo: :class:`Upscaler` (a Pillow image or an image file), the engine of ``hitok upscale``,
``hitok batch`` and the benchmarks, and :func:`upscale`, the one-call form for a Python user.

The photo's way: read (imageio) -> RGB float tensor -> tiled
model inference (tiling; each tile is ``model.upscale(lr, detail=..., color_fix=..., fidelity=...)``, i.e.
generator -> top-1 tokens -> decoder with the first ``detail`` groups (M in the paper's Eq. 4), and the
faithful image at weight ``fidelity`` (models/guide.py, models/restorer.py) -> the LR colour fix of
models/colorfix.py if on)
-> alpha upscaled on its own with bicubic and re-attached -> grey input back to grey -> resized
when --outscale / --width / --height ask for another size (outsize) -> write atomically with the
original ICC/EXIF (imageio).

Everything that can be checked without the model is checked first (:func:`plan_file`): the input's
header, the output's name and format, that it is not the input, does not exist, and can be written
(fsutil.check_writable), so a mistake costs a second, not a model load and an hour of tiles.

Reduced precision (fp16/bf16) runs under autocast; a tile whose output holds NaN/inf is re-run
in fp32 and the rest of the image stays in fp32 (the user gets one warning, not a black image).

The model says how it must be tiled: ``model.tile_align`` (a token, or for windowed models, the
``small`` preset, a whole attention window, so tiled output equals the whole-image output beyond
``model.receptive_field()`` from a tile edge) and which detail / fidelity values it takes
(``model.settings``). A windowed model's cost is linear in a tile's pixels, so --tile auto sizes
its tiles by memory (tiling.AUTO_MAX_TOKENS_WINDOWED).
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from warnings import warn
import numpy as np
import torch
from PIL import Image

from . import accel, tiling
from .device import precision_name, resolve_device, resolve_precision
from .errors import UserError, one_line
from .fsutil import check_writable, low_space_warning
from .imageio import (DEFAULT_MAX_PIXELS, FORMAT_SUFFIX, SUFFIX_FORMAT, Picture, missing_file, picture_from_pil,
                      picture_to_pil, pil_format, probe_image, read_image, write_image)
from .outsize import OutputSize, resize_picture, shrink_warning

FORMAT_CHOICES = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
DEFAULT_OVERLAP = 16  # LR pixels; 64 HR pixels of raised-cosine blend between neighbouring tiles
# Luma weights (ITU-R BT.601, as Pillow's "L" conversion) to bring a grey photo back to grey.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def output_format(path: Path) -> str | None:
    return SUFFIX_FORMAT.get(path.suffix.lower())


def resolve_output(inp: Path, out: Path | str | None, fmt: str = "same",
                   size: OutputSize | None = None) -> tuple[Path, str]:
    """(output path, Pillow format). Default: NAME_x4.EXT beside the input (NAME_x2, NAME_w1000, ... for
    another output size), or inside ``out`` when that is a folder: an existing one, or one to be made, written
    with a trailing slash (``results/``); never ``.png.png``."""
    wanted = FORMAT_CHOICES.get(fmt) if fmt != "same" else None
    if fmt != "same" and wanted is None:
        raise UserError(f"unknown --format {fmt!r}: use png, jpg, webp or same")
    folder = out is not None and (str(out).endswith(("/", os.sep)) or Path(out).is_dir())
    out = Path(out) if out is not None else None
    if out is not None and not folder:
        from_suffix = output_format(out)
        if wanted and from_suffix and from_suffix != wanted:
            raise UserError(f"-o {out} has a {out.suffix} suffix but --format is {fmt}")
        chosen = wanted or from_suffix
        if chosen is None:
            raise UserError(f"-o {out}: cannot tell the image format from {out.suffix or 'no suffix'}; "
                            "use .png, .jpg, .webp or .tif, pass --format, or end a folder's name with /")
        return out, chosen
    source = output_format(inp)
    chosen = wanted or source or "PNG"  # "same" for GIF & co.: PNG keeps every pixel
    # Keep the user's own spelling (.JPEG stays .JPEG) when the format is unchanged.
    suffix = inp.suffix if source == chosen else FORMAT_SUFFIX[chosen]
    name = f"{inp.stem}_{(size or OutputSize()).tag()}{suffix}"
    return (out / name if out is not None else inp.with_name(name)), chosen


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(inp: Path, out: Path, overwrite: bool, flag: str = "--overwrite") -> None:
    """The output may be written: not the input (not even with ``overwrite``), not a folder, not an existing file
    (unless ``overwrite``; ``flag`` is its name in the refusal), and its folder writable (probed)."""
    if same_file(inp, out):
        raise UserError(f"{out} is the input file; refusing to write over it: give another output name")
    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass {flag} to replace it")
    check_writable(out)


def quality_warning(fmts: list[str], quality: int | None) -> str | None:
    """--quality is a JPEG/WebP setting: say so when some outputs will not use it."""
    lossless = sorted({f for f in fmts if f not in ("JPEG", "WEBP")})
    if quality is None or not lossless:
        return None
    return f"--quality applies to JPEG and WebP only; ignored for {', '.join(lossless)} output"


def estimated_bytes(size: tuple[int, int], fmt: str) -> int:
    """A rough output file size for the free-space check: raw RGB for lossless formats, a fifth for lossy."""
    raw = size[0] * size[1] * 3
    return raw // 5 if fmt in ("JPEG", "WEBP") else raw


def check_output_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > 16 * max_pixels:  # the x4 of the largest input --max-pixels lets in
        raise UserError(f"{path}: the output would be {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, more "
                        f"than 16 x --max-pixels ({16 * max_pixels:,}); ask for a smaller size")


def tile_grid(model: torch.nn.Module) -> tuple[int, bool]:
    """(the LR pixels a tile must be a multiple of, whether that is an attention window) as the Upscaler tiles
    ``model``; works on a model built on the meta device (model_store.peek), so --tile is checked before a load."""
    return model.tile_align, bool(model.attention_window)


def check_tiling(tile: int | None, overlap: int | None, grid: int, windowed: bool) -> None:
    """Refuse a --tile that is no positive whole number or is off the model's tile grid, and an --overlap that is
    negative or that a given tile cannot hold."""
    for name, value, least in (("--tile", tile, 1), ("--overlap", overlap, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least):
            raise UserError(f"{name} {value!r}: give a whole number of input pixels, at least {least} "
                            "(None: automatic)")
    if tile is not None and tile % grid:
        why = (f"this model's attention windows span {grid} LR pixels" if windowed
               else "the model's token size in LR pixels")
        lower = tiling.round_down(tile, grid)
        options = " or ".join(str(t) for t in (lower, lower + grid) if t > 0)
        raise UserError(f"--tile {tile}: must be a multiple of {grid} ({why}); e.g. {options}")
    if tile is not None and overlap is not None and 2 * tiling.round_up(overlap, grid) > tile:
        raise UserError(f"--overlap {overlap}: at most half the tile ({tiling.round_down(tile // 2, grid)} "
                        f"for --tile {tile})")


@dataclass
class FilePlan:
    """One photo to upscale, checked without the model (:func:`plan_file`)."""

    src: Path
    dst: Path
    fmt: str  # Pillow format name
    input_size: tuple[int, int]  # (width, height), upright
    output_size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)


def plan_file(inp: Path, out: Path | str | None = None, fmt: str = "same", size: OutputSize | None = None,
              overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
              quality: int | None = None) -> FilePlan:
    """Every check of ``hitok upscale`` that needs no model, in about a millisecond whatever the photo's size:
    the input's header (an image, under --max-pixels), the output's name, format and folder (writable)."""
    inp, size = Path(inp), size or OutputSize()
    if not inp.exists():
        raise missing_file(inp)
    if not inp.is_file():
        raise UserError(f"{inp}: is a folder, not a photo" if inp.is_dir() else
                        f"{inp}: not a regular file (a pipe, device or socket); give an image file")
    dest, pil_fmt = resolve_output(inp, out, fmt, size)
    check_output(inp, dest, overwrite)
    in_size = probe_image(inp, max_pixels)
    out_size = size.target(*in_size)
    check_output_pixels(inp, out_size, max_pixels)
    warnings = [w for w in (quality_warning([pil_fmt], quality), shrink_warning(in_size, out_size),
                            low_space_warning(dest, estimated_bytes(out_size, pil_fmt))) if w]
    return FilePlan(inp, dest, pil_fmt, in_size, out_size, warnings)


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
    texture: float = 0.0
    outscale: float | None = None  # the size options as given (all None: the model's x4)
    width: int | None = None
    height: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Upscaler:
    """One loaded model on one device; reused for every file of a batch.

    ``device`` / ``dtype``: a torch device and dtype, or their names (``"auto"``, ``"cpu"``, ``"cuda:1"``;
    ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``), chosen as hitok/device.py says. ``fix_colors``: the old
    name of ``color_fix``, taken with a DeprecationWarning for one release."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "auto",
                 dtype: torch.dtype | str = "auto", detail: int | None = None, model_id: str = "",
                 color_fix: bool = True, fidelity: float | None = None, *, fix_colors: bool | None = None,
                 texture: float | None = None):
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"Upscaler takes a loaded model (hitok.load_model(...)), not {type(model).__name__}")
        if fix_colors is not None:
            warn("Upscaler(fix_colors=...) is now Upscaler(color_fix=...)", DeprecationWarning, stacklevel=2)
            color_fix = fix_colors
        self.detail, self.fidelity = model.settings(detail, fidelity)  # a SettingError (UserError) if out of range
        self.texture = model.texture_setting(texture)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        dtype = dtype if isinstance(dtype, torch.dtype) else resolve_precision(dtype, device)
        # channels-last on the CPU: oneDNN's convolutions run without layout reorders, measured 1.3x (fp32) and
        # 1.44x (bf16) faster for the default model per 128x128 input (docs/benchmarks.md); outputs unchanged.
        # Module.to converts the caller's model in place (eval's rows share one model; harmless, same numbers).
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format).eval()
        self.device, self.dtype = device, dtype
        self.model_id = model_id or getattr(model, "model_id", "")  # hitok.load_model's models carry their id
        self.color_fix = color_fix
        self.warnings: list[str] = []
        self._bytes_per_pixel: float | None = None
        self.window, self.grid = model.attention_window, model.tile_align
        # fp32 on the CPU: an opt-in tile engine (HITOK_ENGINE=int8 or onnx, hitok/accel.py); None = eager torch
        self.engine, note = accel.choose_engine(self.model, device, dtype, model_id)
        self.warnings = [note] if note else []  # a HITOK_ENGINE that does not run here; each photo then starts anew
        if detail is not None and not model.uses_detail(self.fidelity):
            self.warnings.append(f"detail {detail} changes nothing at fidelity {self.fidelity:g}: this model's "
                                 "restorer alone makes the picture there; lower the fidelity for detail to act")
        if texture and not model.uses_texture(self.fidelity):
            self.warnings.append(f"texture {texture:g} changes nothing at fidelity {self.fidelity:g}: there the "
                                 "picture is the tokens' alone; raise the fidelity for texture to act")

    @property
    def default_overlap(self) -> int:
        """DEFAULT_OVERLAP, or less when a windowed model's receptive field is shorter (then the overlap,
        on the window grid, covers it and tiles agree exactly where they are blended)."""
        reach = self.model.receptive_field(self.color_fix)
        if reach is None:
            return DEFAULT_OVERLAP
        return min(DEFAULT_OVERLAP, tiling.round_up(reach, self.grid))

    # -- per tile ---------------------------------------------------------------------------------
    def _forward(self, lr: torch.Tensor, dtype: torch.dtype, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        with torch.inference_mode():
            kw = dict(detail=self.detail, color_fix=self.color_fix, fidelity=self.fidelity)
            if getattr(self.model, "texture_restorer", None) is not None:  # 0 too: it overrides the file's default
                kw["texture"] = self.texture
                kw["origin"] = origin  # its noise is tied to picture position
            if dtype == torch.float32:
                # the opt-in engines (hitok/accel.py) know nothing of the texture dial
                if self.engine is not None and "texture" not in kw and (
                        out := self.engine(lr, self.detail, self.color_fix, self.fidelity)) is not None:
                    return out
                return self.model.upscale(lr, **kw)
            with torch.autocast(self.device.type, dtype=dtype):
                return self.model.upscale(lr, **kw).float()

    def tile_fn(self, lr: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """One tile x4; origin: where it starts in the picture (LR pixels)."""
        lr = lr.to(self.device).contiguous(memory_format=self.memory_format)
        out = self._forward(lr, self.dtype, origin)
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            self.warnings.append(f"{precision_name(self.dtype)} produced NaN/inf; re-ran in fp32")
            self.dtype = torch.float32
            out = self._forward(lr, self.dtype, origin)
        if not torch.isfinite(out).all():
            raise UserError("the model produced NaN/inf even in fp32; the model file is probably broken")
        return out

    def pick_tile(self, lr_shape: tuple[int, int]) -> int:
        """--tile auto: the largest aligned tile that fits the device's free memory."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = tiling.measure_bytes_per_pixel(self.tile_fn, self.device, self.grid, self.model)
        free = tiling.free_memory_bytes(self.device)
        return tiling.auto_tile(self._bytes_per_pixel, free, self.device, self.grid, max(lr_shape),
                                windowed=bool(self.window), align=self.model.lr_align)

    # -- per picture ------------------------------------------------------------------------------
    def upscale_picture(self, pic: Picture, tile: int | None = None, overlap: int | None = None,
                        progress: tiling.Progress | None = None) -> tuple[Picture, tiling.TilePlan]:
        """x4 the picture; returns (picture, the tile plan that was used in the end).

        tile / overlap in LR pixels, None = auto / :attr:`default_overlap`. A tile must be a multiple of
        :attr:`grid` (:meth:`check_tiling`); the overlap is rounded up to it and held to half a tile, with a
        warning when the user's overlap was cut."""
        scale, align, grid = self.model.scale, self.model.lr_align, self.grid
        if 0 in pic.size:
            raise UserError(f"the image has no pixels ({pic.size[0]}x{pic.size[1]})")
        self.check_tiling(tile, overlap)
        asked_overlap = overlap
        overlap = self.default_overlap if overlap is None else overlap
        rgb = pic.pixels if not pic.grey else np.repeat(pic.pixels, 3, axis=2)
        lr = torch.from_numpy(rgb.astype(np.float32) / pic.max_value).permute(2, 0, 1)[None]  # (1, 3, h, w)
        h, w = lr.shape[-2:]
        balance = not tile  # an auto tile is a ceiling: even the tiles out under it; a given one is kept
        tile = tile or self.pick_tile((h, w))
        out_dtype = np.uint16 if pic.bits == 16 else np.uint8

        def on_retry(old: int, new: int) -> None:
            self.warnings.append(f"out of memory with tile {old}; retried with tile {new}")

        try:
            hr, plan = tiling.tiled_apply_with_retry(self.tile_fn, lr, scale, tile, overlap, grid, self.device,
                                                     out_dtype if not pic.grey else np.float32, progress, on_retry,
                                                     balance, align, with_origin=True)
        except Exception as exc:  # noqa: BLE001
            if tiling.is_out_of_memory(exc):
                raise UserError(f"out of memory even with tile {4 * grid}; try --device cpu") from None
            raise
        if pic.grey:
            grey = (hr @ _LUMA)[..., None]  # (H, W, 1)
            hr = (grey * pic.max_value + 0.5).astype(out_dtype)
        alpha = upscale_alpha(pic.alpha, scale) if pic.alpha is not None else None
        if asked_overlap is not None and len(plan) > 1 and plan.overlap < tiling.round_up(asked_overlap, grid):
            self.warnings.append(f"--overlap {asked_overlap}: at most half a tile is used; overlapped "
                                 f"{plan.overlap} LR pixels with {plan.tile_h}x{plan.tile_w} tiles")
        return Picture(pixels=hr, alpha=alpha, icc=pic.icc, exif=pic.exif, source_format=pic.source_format), plan

    def upscale(self, image: Image.Image, tile: int | None = None, overlap: int | None = None) -> Image.Image:
        """A Pillow image, x4 (alpha and a grey image's greyness kept); tile / overlap as
        :meth:`upscale_picture`. Warnings (a float image tone-mapped, an fp32 re-run, ...) are left in
        :attr:`warnings`, as ``hitok upscale`` prints them."""
        if not isinstance(image, Image.Image):
            raise UserError(f"upscale() takes a Pillow image, not {type(image).__name__}; for a file use "
                            "upscale_file(), for an array Image.fromarray()")
        if 0 in image.size:
            raise UserError(f"the image has no pixels ({image.size[0]}x{image.size[1]})")
        try:
            pic = picture_from_pil(image)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lazily opened file whose pixel data is broken
            raise UserError(f"cannot read the image's pixels ({one_line(exc)})") from None
        self.warnings = []
        result, _ = self.upscale_picture(pic, tile, overlap)
        self.warnings = pic.warnings + self.warnings
        return picture_to_pil(result)

    def check_tiling(self, tile: int | None, overlap: int | None) -> None:
        """Refuse a --tile off the model's tile grid, and an --overlap that a given tile cannot hold."""
        check_tiling(tile, overlap, self.grid, bool(self.window))

    def upscale_file(self, inp: Path | str, out: Path | str, fmt: str | None = None, quality: int | None = None,
                     tile: int | None = None, overlap: int | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS,
                     progress: tiling.Progress | None = None, size: OutputSize | None = None,
                     picture: Picture | None = None, overwrite: bool = False) -> UpscaleResult:
        """Read ``inp`` (or take ``picture``, already read and planned from it: :func:`plan_file` checked its output
        size), upscale, resize to ``size`` if it asks for another size than x4, write ``out`` atomically as ``fmt``
        (a Pillow name or "jpg"/"png"/...; None: from ``out``'s suffix).

        ``out`` is never the input, and an existing ``out`` is replaced only with ``overwrite=True`` (the checks
        of ``hitok upscale``, before any work). Warnings are returned in the result and left in :attr:`warnings`."""
        start = time.perf_counter()
        inp, out, size = Path(inp), Path(out), size or OutputSize()
        fmt = pil_format(fmt, out)
        check_output(inp, out, overwrite, flag="overwrite=True")
        self.warnings = []
        pic = picture if picture is not None else read_image(inp, max_pixels=max_pixels)
        target = size.target(*pic.size)
        if picture is None:
            check_output_pixels(inp, target, max_pixels)
        result, plan = self.upscale_picture(pic, tile, overlap, progress)
        result = resize_picture(result, target)
        warnings = pic.warnings + self.warnings + [w for w in (quality_warning([fmt], quality),) if w]
        warnings += write_image(out, result, fmt, quality, overwrite)  # overwrite=False: not even a file made meanwhile
        self.warnings = warnings
        return UpscaleResult(
            input=str(inp), output=str(out), input_size=pic.size, output_size=result.size, format=fmt,
            bits=result.bits if fmt in ("PNG", "TIFF") else 8, device=str(self.device),
            precision=precision_name(self.dtype), tile=max(plan.tile_h, plan.tile_w), tiles=len(plan),
            overlap=plan.overlap, detail=self.detail, fidelity=self.fidelity, color_fix=self.color_fix,
            model_id=self.model_id, seconds=round(time.perf_counter() - start, 3), texture=self.texture,
            warnings=warnings,
            **size.to_dict())


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Alpha on its own, bicubic: the model is trained on photos, not on masks."""
    h, w = alpha.shape
    if alpha.dtype == np.uint8:
        return np.asarray(Image.fromarray(alpha).resize((w * scale, h * scale), Image.BICUBIC))
    big = Image.fromarray(alpha.astype(np.float32)).resize((w * scale, h * scale), Image.BICUBIC)  # mode "F"
    return np.clip(np.asarray(big), 0, 65535).round().astype(np.uint16)


def upscale(image: Image.Image, model: torch.nn.Module | str | None = None, device: str = "auto",
            precision: str = "auto", **options) -> Image.Image:
    """A Pillow image, x4, in one call. ``model``: a loaded model, a model name or ``.safetensors`` path, or None
    for the shipped default; ``options`` go to :class:`Upscaler` (detail, color_fix, fidelity, texture). Loads the model
    on every call: for many images, make one :class:`Upscaler` and call its :meth:`~Upscaler.upscale`."""
    from .model_store import load_model

    dev = resolve_device(device)
    if not isinstance(model, torch.nn.Module):
        model = load_model(model, device=dev)
    return Upscaler(model, dev, resolve_precision(precision, dev), **options).upscale(image)
