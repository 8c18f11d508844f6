"""Reading and writing photos without losing what users care about.

Read (:func:`read_image`): decode with Pillow under a decompression-bomb guard, apply the EXIF
orientation to the pixels, split off alpha, bring grey / palette / CMYK / 16-bit / float modes
to one of four layouts, keep the ICC profile and EXIF, and take the first frame of animations
(with a warning). :func:`probe_image` makes the same checks on the header alone, so that a bad
input is refused before a model is loaded. Write (:func:`write_image`): PNG, JPEG, WebP, TIFF or
BMP, 16 bits per channel where the source had them (PNG/TIFF), the ICC profile and EXIF copied
(orientation reset to 1 because the pixels are already upright), always through an atomic
temp-file + rename. TIFF output carries the descriptive tags (Make, Model, Software, DateTime,
Artist, Copyright, ImageDescription): libtiff refuses Pillow's EXIF sub-IFD, so the camera
sub-IFDs (exposure, GPS) are not copied into TIFF, with a warning.

Samples beyond 16-bit integers are brought into them with a warning, never silently:
32-bit float (TIFF "F" or float RGB) in 0..1 is scaled by 65535; float data beyond 0..1 (HDR) is
tone-mapped per channel with the extended Reinhard curve x (1 + x / w^2) / (1 + x), white point
w = the largest value (so w maps to 1 and values near 0 keep their slope), negatives and NaN to 0;
32-bit integers beyond 0..65535 are scaled linearly by 65535 / max.

:func:`list_images` and :func:`load_rgb8` are the one lister and loader of photo folders (training data,
evaluation sets); :func:`picture_from_pil` / :func:`picture_to_pil` bridge to Pillow images for Python callers.

A :class:`Picture` holds pixels as integers, (H, W, 1) for grey or (H, W, 3) for colour,
uint8 or uint16, with alpha as a separate (H, W) plane of the same dtype.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, TiffImagePlugin

from . import highbit
from .errors import UserError, one_line
from .fsutil import atomic_write

# Pillow's own default guard (~89.5 Mpx); --max-pixels raises it explicitly.
DEFAULT_MAX_PIXELS = 89_478_485

# Formats hitok writes, by Pillow name, and the suffixes that mean them.
SUFFIX_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
# zlib level of 8-bit PNG output. Pillow's 6 took 160 ms for a 1024x1024 x4 photo (606 KiB); 4 takes 60 ms for
# 6 % more bytes (642 KiB), and is both faster and smaller than 3 (64 ms, 708 KiB); 1 saves 20 ms more for 28 %.
PNG_COMPRESS_LEVEL = 4
# Suffixes hitok reads (Pillow can read more; these are the ones batch picks up by default).
READ_SUFFIXES = tuple(SUFFIX_FORMAT) + (".gif",)

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
# A TIFF's "EXIF" is its whole IFD0 (strip offsets and all); only these descriptive tags travel.
_TIFF_TAGS_KEPT = (270, 271, 272, 274, 305, 306, 315, 33432)
# Inside the Exif sub-IFD: values that are offsets into the source file (interoperability IFD, maker notes).
_OFFSET_TAGS = (0xA005, 0x927C)
_pillow_guard_lock = threading.RLock()


@dataclass
class Picture:
    pixels: np.ndarray  # (H, W, 1) grey or (H, W, 3) colour; uint8 or uint16
    alpha: np.ndarray | None = None  # (H, W), same dtype as pixels
    icc: bytes | None = None  # ICC profile matching the pixels' colour space
    exif: bytes | None = None  # "Exif\0\0..." with orientation already applied (tag = 1)
    source_format: str = ""  # Pillow's name for the input format, e.g. "JPEG"
    warnings: list[str] = field(default_factory=list)

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def max_value(self) -> int:
        return 65535 if self.bits == 16 else 255

    @property
    def grey(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), Pillow's order."""
        return self.pixels.shape[1], self.pixels.shape[0]


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an (H, W, ...) array as EXIF orientation 1..8 asks (same as ImageOps.exif_transpose)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.rot90(x, 2).swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(a)) if op else a


def _icc_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc and len(icc) >= 20 else None


def _read_exif(im: Image.Image, warnings: list[str]) -> tuple[int, bytes | None]:
    """(orientation, EXIF bytes with orientation reset to 1) of an opened image."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(_EXIF_ORIENTATION, 1))
        if im.format == "TIFF":
            kept = Image.Exif()
            for tag in _TIFF_TAGS_KEPT:
                if tag in exif:
                    kept[tag] = exif[tag]
            for tag in (_EXIF_IFD, _GPS_IFD):  # exposure, date taken, GPS: JPEG/PNG/WebP output carries them
                sub = {k: v for k, v in exif.get_ifd(tag).items() if k not in _OFFSET_TAGS} if tag in exif else {}
                if sub:
                    kept.get_ifd(tag).update(sub)
            exif = kept
        if _EXIF_ORIENTATION in exif:
            exif[_EXIF_ORIENTATION] = 1
        data = exif.tobytes() if len(exif) else None
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not cost the user the photo
        warnings.append(f"EXIF could not be read and is not copied ({one_line(exc)})")
        return 1, None
    return (orientation if 1 <= orientation <= 8 else 1), data


@contextlib.contextmanager
def _pillow_guard_off():
    # We apply the user's --max-pixels limit ourselves (one clear message); Pillow's global
    # guard would otherwise fire first with its own limit and wording.
    with _pillow_guard_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def float_to_uint16(a: np.ndarray, warnings: list[str]) -> np.ndarray:
    """32-bit float samples -> uint16: 0..1 scaled, HDR tone-mapped (module docstring), with a warning."""
    a = a.astype(np.float32)
    bad = int((~np.isfinite(a)).sum())
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= 1:
        warnings.append("32-bit float samples (0..1) were converted to 16-bit integers")
    else:
        w = max(hi, 1.0)
        x = np.clip(a, 0, None)
        a = x * (1 + x / (w * w)) / (1 + x)
        warnings.append(f"32-bit float samples span {lo:.4g}..{hi:.4g}, beyond 0..1: tone-mapped into 16-bit "
                        f"integers (extended Reinhard, white point {w:.4g}; negatives clipped to 0)")
    if bad:
        warnings.append(f"{bad} NaN/inf float sample(s) were set to 0")
    return (np.clip(a, 0, 1) * 65535 + 0.5).astype(np.uint16)


def _int32_to_uint16(a: np.ndarray, warnings: list[str]) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 65535:
        return a.astype(np.uint16)
    warnings.append(f"32-bit integer samples span {lo}..{hi}: scaled linearly by 65535/{hi} into 16-bit integers"
                    + ("; negatives clipped to 0" if lo < 0 else ""))
    return (np.clip(a, 0, None).astype(np.float64) * (65535 / max(hi, 1)) + 0.5).astype(np.uint16)


def _to_layout(im: Image.Image, icc: bytes | None, warnings: list[str]):
    """Pillow image -> (pixels (H,W,C) uint8/uint16, alpha or None, icc that fits the pixels)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)[..., None], None, icc
    if mode == "I":
        return _int32_to_uint16(np.asarray(im), warnings)[..., None], None, icc
    if mode == "F":
        return float_to_uint16(np.asarray(im, dtype=np.float32), warnings)[..., None], None, icc
    if mode == "CMYK":
        if _icc_space(icc) == b"CMYK":
            try:
                srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
                im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb,
                                               outputMode="RGB")
                return np.asarray(im), None, srgb.tobytes()
            except Exception as exc:  # noqa: BLE001
                warnings.append(f"CMYK colour profile unusable ({one_line(exc)}); converted without it")
        return np.asarray(im.convert("RGB")), None, None
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA") if im.has_transparency_data else im.convert("RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("L", "LA"):
        a = np.asarray(im)
        if mode == "L":
            return a[..., None], None, icc
        return np.ascontiguousarray(a[..., :1]), np.ascontiguousarray(a[..., 1]), icc
    if mode == "RGBA":
        a = np.asarray(im)
        return np.ascontiguousarray(a[..., :3]), np.ascontiguousarray(a[..., 3]), icc
    if mode == "RGB":
        return np.asarray(im), None, icc
    try:
        # "A" is alpha only as the last band (LAB's A is a colour axis)
        converted = im.convert("RGBA" if im.getbands()[-1] in ("A", "a") else "RGB")
    except Exception:  # noqa: BLE001
        raise UserError(f"unsupported pixel mode {mode!r}") from None
    return _to_layout(converted, icc if _icc_space(icc) == b"RGB " else None, warnings)


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as fp:
        return fp.read(n)


def _check_size(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise UserError(f"{path}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                        f"(decompression-bomb guard); pass --max-pixels {w * h} if you trust this file")
    if w == 0 or h == 0:
        raise UserError(f"{path}: image has no pixels ({w}x{h})")


def _is_tiff(path: Path) -> bool:
    return _head(path, 4) in (b"II*\x00", b"MM\x00*")


def _decode_tiff_fallback(path: Path, max_pixels: int, warnings: list[str]) -> Picture | None:
    """TIFF layouts Pillow cannot open: 16-bit grey+alpha (which hitok itself writes) and float RGB(A)."""
    if not _is_tiff(path):
        return None
    try:
        full = highbit.read_tiff_samples(path, max_pixels)
    except highbit.TooLarge as big:
        _check_size(path, big.width, big.height, max_pixels)  # the guard's message, before any decompression
        raise
    except Exception:  # noqa: BLE001 - a fallback reader that fails just means "not readable"
        return None
    if full is None:
        return None
    _check_size(path, full.shape[1], full.shape[0], max_pixels)
    c = full.shape[2]
    alpha = full[..., c - 1] if c in (2, 4) else None
    pixels = full[..., : 1 if c <= 2 else 3]
    if full.dtype == np.float32:
        pixels = float_to_uint16(pixels, warnings)
        alpha = None if alpha is None else (np.clip(np.nan_to_num(alpha), 0, 1) * 65535 + 0.5).astype(np.uint16)
    return Picture(pixels=pixels, alpha=alpha, source_format="TIFF", warnings=warnings)


def _unreadable(path: Path, exc: Exception) -> UserError:
    """The one line for a file that fails to decode: the system could not read it (permissions, I/O), or its
    content is broken."""
    if isinstance(exc, PermissionError):
        return UserError(f"{path}: cannot read it: permission denied; check the file's permissions")
    if isinstance(exc, OSError) and exc.errno is not None:
        return UserError(f"{path}: cannot read it ({exc.strerror or one_line(exc)})")
    return UserError(f"{path}: cannot decode, the file is truncated or corrupt ({one_line(exc)})")


def _open(path: Path) -> Image.Image | None:
    """Pillow's lazy open (header only); None when Pillow does not know the format."""
    try:
        return Image.open(path)
    except Image.UnidentifiedImageError:
        return None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a corrupt header
        raise _unreadable(path, exc) from None


def _decode(path: Path, max_pixels: int, warnings: list[str]) -> tuple[Picture, int]:
    """Decode with Pillow (or highbit) -> (picture as stored, EXIF orientation still to apply)."""
    im = _open(path)
    if im is None:
        pic = _decode_tiff_fallback(path, max_pixels, warnings)
        if pic is None and (kind := _signature(path)):
            raise UserError(f"{path}: cannot decode, the file is truncated or corrupt (a {kind} file whose "
                            "header is damaged)")
        if pic is None:
            raise UserError(f"{path}: not an image, or a format hitok cannot read")
        return pic, 1
    with im:
        w, h = im.size
        _check_size(path, w, h, max_pixels)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            warnings.append(f"{frames} frames (animated or multi-page): only the first frame is used")
        fmt = im.format or ""
        icc = im.info.get("icc_profile") or None
        orientation, exif = _read_exif(im, warnings)
        try:
            pixels = alpha = None
            if fmt == "PNG" and highbit.png_bit_depth(_head(path, 26)) == 16:
                full = highbit.read_png16(path)  # (H, W, C) uint16, C in 1..4
            elif fmt == "TIFF" and set(im.tag_v2.get(258, (8,))) == {16} and im.mode in ("RGB", "RGBA"):
                full = highbit.read_tiff16(path)
                if full is None:
                    warnings.append("this 16-bit TIFF layout (compression/tiling) is read at 8 bits per channel")
            else:
                full = None
            if full is not None:
                c = full.shape[2]
                pixels = full[..., : 1 if c <= 2 else 3]
                alpha = full[..., c - 1] if c in (2, 4) else None
            else:
                im.seek(0)
                im.load()
                pixels, alpha, icc = _to_layout(im, icc, warnings)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
            raise _unreadable(path, exc) from None
    return Picture(pixels=pixels, alpha=alpha, icc=icc, exif=exif, source_format=fmt, warnings=warnings), orientation


# The first bytes of the formats hitok reads: a file that starts so and still does not open is damaged, not foreign.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _signature(path: Path) -> str | None:
    head = _head(path, 12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def missing_file(path: Path) -> UserError:
    """The one line for a path that names no file: nothing there, or a link to nothing."""
    if path.is_symlink():
        return UserError(f"{path}: a link to a missing file ({os.readlink(path)})")
    return UserError(f"{path}: no such file")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise missing_file(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file (a pipe, device or socket); give an image file")
    try:
        with path.open("rb") as fp:
            empty = not fp.read(1)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if empty:
        raise UserError(f"{path}: empty file (0 bytes)")


def probe_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the upright image, from its header; raises the UserError :func:`read_image` would
    for a missing, empty, unknown or oversized file. Truncated pixel data shows only when it is read."""
    path = Path(path)
    _check_file(path)
    with _pillow_guard_off():
        im = _open(path)
        if im is None:  # the TIFF layouts only highbit reads: decode them (rare, and small headers tell little)
            return read_image(path, max_pixels).size
        with im:
            w, h = im.size
            _check_size(path, w, h, max_pixels)
            orientation, _ = _read_exif(im, [])
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an image file into an upright :class:`Picture`; raise UserError with one line if not possible."""
    path = Path(path)
    _check_file(path)
    warnings: list[str] = []
    # Pillow's own bomb guard also fires inside some decoders (GIF frames, ...), so it stays off
    # for the whole decode; our check below, with the user's limit, runs before any pixel is read.
    with _pillow_guard_off():
        pic, orientation = _decode(path, max_pixels, warnings)
    # A colour profile must describe the pixels we hand on, or viewers render wrong colours.
    if _icc_space(pic.icc) != (b"GRAY" if pic.grey else b"RGB "):
        pic.icc = None
    pic.pixels = apply_orientation(np.ascontiguousarray(pic.pixels), orientation)
    if pic.alpha is not None:
        pic.alpha = apply_orientation(np.ascontiguousarray(pic.alpha), orientation)
    return pic


def list_images(folder: Path | str, *, recursive: bool = False, max_images: int | None = None) -> list[Path]:
    """The photos hitok reads (by suffix, :data:`READ_SUFFIXES`) in ``folder``, sorted, the first ``max_images``
    of them; ``recursive`` walks subfolders too. A missing or empty folder is a UserError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: is not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.suffix.lower() in READ_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images found in {folder}")
    return files[:max_images] if max_images else files


def load_rgb8(path: Path | str) -> np.ndarray:
    """Any photo hitok reads -> upright (H, W, 3) uint8: 16-bit scaled down, grey repeated, alpha dropped."""
    pix = read_image(path).pixels
    if pix.dtype == np.uint16:
        pix = np.round(pix / 257.0).astype(np.uint8)
    return np.repeat(pix, 3, axis=2) if pix.shape[2] == 1 else pix


def picture_from_pil(im: Image.Image) -> Picture:
    """A Pillow image (any mode) as a :class:`Picture`, pixels as they are: no EXIF rotation, and of an
    animation the current frame."""
    warnings: list[str] = []
    icc = im.info.get("icc_profile") or None
    pixels, alpha, icc = _to_layout(im, icc, warnings)
    if _icc_space(icc) != (b"GRAY" if pixels.shape[2] == 1 else b"RGB "):
        icc = None
    return Picture(pixels=pixels, alpha=alpha, icc=icc, source_format=im.format or "", warnings=warnings)


def picture_to_pil(pic: Picture) -> Image.Image:
    """A :class:`Picture` as a Pillow image: L, LA, RGB or RGBA at 8 bits, or I;16 for 16-bit grey without alpha
    (Pillow has no 16-bit colour modes, so other 16-bit pictures come back at 8 bits)."""
    if pic.bits == 16 and pic.grey and pic.alpha is None:
        im = Image.fromarray(np.ascontiguousarray(pic.pixels[..., 0]))  # mode I;16
    else:
        pixels = _to8(pic.pixels)
        planes = [pixels] if pic.alpha is None else [pixels, _to8(pic.alpha)[..., None]]
        arr = np.concatenate(planes, axis=2)  # (H, W, 1..4)
        im = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
    if pic.icc:
        im.info["icc_profile"] = pic.icc
    return im


def _exif_for_output(exif: bytes | None, width: int, height: int) -> bytes | None:
    """EXIF with the pixel dimensions updated (orientation was reset at read time)."""
    if not exif:
        return None
    try:
        ex = Image.Exif()
        ex.load(exif)
        if _EXIF_IFD not in ex:  # get_ifd would add an empty Exif sub-IFD, which libtiff refuses
            return exif
        ifd = ex.get_ifd(_EXIF_IFD)
        if _PIXEL_X in ifd or _PIXEL_Y in ifd:
            ifd[_PIXEL_X], ifd[_PIXEL_Y] = width, height
        return ex.tobytes()
    except Exception:  # noqa: BLE001 - keep the original bytes rather than drop the metadata
        return exif


def _tiff_tags(exif: bytes | None, warnings: list[str]) -> dict[int, str]:
    """The descriptive (ASCII) IFD0 tags of ``exif`` that a TIFF can carry; warns about what it cannot."""
    if not exif:
        return {}
    try:
        ex = Image.Exif()
        ex.load(exif)
        tags = {t: v for t in _TIFF_TAGS_KEPT if isinstance(v := ex.get(t), str) and v}
        sub_ifds = [t for t in (_EXIF_IFD, _GPS_IFD) if t in ex and len(ex.get_ifd(t))]
    except Exception:  # noqa: BLE001 - broken EXIF: the photo is still written
        warnings.append("EXIF could not be parsed and is not copied into TIFF output")
        return {}
    if sub_ifds:
        warnings.append("camera EXIF (exposure, date taken, GPS) is not copied into TIFF output; "
                        "its descriptive tags (make, model, software, copyright) are")
    return tags


def pil_format(fmt: str | None, out: Path | str) -> str:
    """A Pillow format name from what a caller gave: None (from ``out``'s suffix), a Pillow name ("JPEG") or a
    --format / suffix spelling ("jpg", ".tif")."""
    if fmt is None:
        found = SUFFIX_FORMAT.get(Path(out).suffix.lower())
        if found is None:
            raise UserError(f"{out}: cannot tell the image format from {Path(out).suffix or 'no suffix'}; "
                            "use .png, .jpg, .webp or .tif, or give the format")
        return found
    name = fmt.strip().upper()
    found = name if name in FORMAT_SUFFIX else SUFFIX_FORMAT.get("." + name.lower().lstrip("."))
    if found is None:
        raise UserError(f"format {fmt!r}: hitok writes {', '.join(FORMAT_SUFFIX)}")
    return found


def _to8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x / 257)


def write_image(path: Path | str, pic: Picture, fmt: str | None = None, quality: int | None = None,
                overwrite: bool = True) -> list[str]:
    """Write ``pic`` atomically as ``fmt`` (a Pillow name or "jpg", "png", ...; None: from the suffix), quality
    1..100 for JPEG/WebP. With ``overwrite=False`` a file at ``path`` is never replaced, not even one that appears
    while this writes (fsutil.atomic_path). Returns warnings for the user."""
    path = Path(path)
    fmt = pil_format(fmt, path)
    if quality is not None and not 1 <= quality <= 100:
        raise UserError(f"quality {quality}: use 1..100")
    warnings: list[str] = []
    pixels, alpha, icc = pic.pixels, pic.alpha, pic.icc
    h, w = pixels.shape[:2]
    exif = _exif_for_output(pic.exif, w, h)
    if fmt in ("JPEG", "BMP") and alpha is not None:
        # No (portable) alpha: composite onto white rather than let transparent areas turn black.
        a = alpha.astype(np.float32)[..., None] / pic.max_value
        pixels = (pixels.astype(np.float32) * a + pic.max_value * (1.0 - a)).round().astype(pixels.dtype)
        alpha = None
        warnings.append(f"{fmt} keeps no transparency: transparent areas were flattened onto white")
    if fmt == "WEBP" and pic.grey:
        pixels = np.repeat(pixels, 3, axis=2)  # WebP has no grey mode
        icc = None
    tiff_tags = _tiff_tags(exif, warnings) if fmt == "TIFF" else {}
    if pic.bits == 16 and fmt in ("PNG", "TIFF"):
        planes = pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=2)
        with atomic_write(path, overwrite) as fp:
            if fmt == "PNG":
                highbit.write_png16(fp, planes, icc=icc, exif=exif)
            else:
                highbit.write_tiff16(fp, planes, icc=icc, tags=tiff_tags)
        return warnings

    if pic.bits == 16:
        warnings.append(f"{fmt} holds 8 bits per channel: this 16-bit photo was written at 8 bits "
                        "(PNG or TIFF keep all 16)")
    pixels, alpha = _to8(pixels), (_to8(alpha) if alpha is not None else None)
    if pixels.shape[2] == 1:
        arr = pixels[..., 0] if alpha is None else np.dstack([pixels[..., 0], alpha])
    else:
        arr = pixels if alpha is None else np.dstack([pixels, alpha])
    im = Image.fromarray(np.ascontiguousarray(arr))  # mode follows the shape: L, LA, RGB, RGBA
    kwargs: dict = {}
    if icc:
        kwargs["icc_profile"] = icc
    if exif and fmt in ("PNG", "JPEG", "WEBP"):
        kwargs["exif"] = exif
    if tiff_tags:
        kwargs["tiffinfo"] = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, value in tiff_tags.items():
            kwargs["tiffinfo"][tag] = value
    if fmt == "JPEG":
        q = 95 if quality is None else quality
        # 4:4:4 chroma at high quality: upscaled detail is exactly what 4:2:0 would blur away.
        kwargs.update(quality=q, subsampling=0 if q >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        q = 95 if quality is None else quality
        kwargs.update(quality=q, lossless=q >= 100, method=4)
    elif fmt == "PNG":
        kwargs.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_deflate")
    with atomic_write(path, overwrite) as fp:
        im.save(fp, format=fmt, **kwargs)
    return warnings
