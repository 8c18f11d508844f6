"""Generated test images for the CLI tests: smooth photos and a corpus of bad or awkward inputs.

Everything is made on the fly (never read from /work/shared/data) and kept tiny (<= 64 px).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from hitok.highbit import write_png16


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (H, W, 3) uint8: low-frequency sinusoids, no edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = []
    for _ in range(3):
        fx, fy, ph = rng.uniform(0.02, 0.08), rng.uniform(0.02, 0.08), rng.uniform(0, 6.28)
        chans.append(0.5 + 0.35 * np.sin(fx * x * 6.28 / 2 + fy * y * 6.28 / 2 + ph))
    return (np.stack(chans, -1) * 255).round().astype(np.uint8)


def save_png(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header claiming side x side pixels, with no image data behind it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    return path


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 24 (w) x 16 (h) JPEG stored sideways with an EXIF orientation tag and a camera make."""
    im = Image.fromarray(smooth_rgb(16, 24, seed=3))
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "HitokCam"
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def p_mode_transparent(path: Path) -> Path:
    """A palette PNG whose left half is fully transparent (palette index 0)."""
    idx = np.ones((16, 24), np.uint8) * 2
    idx[:, :12] = 0
    idx[4:12, 14:20] = 1
    im = Image.frombytes("P", (24, 16), idx.tobytes())
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 9))
    im.save(path, transparency=0)
    return path


def png16(path: Path, channels: int = 3) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    base = smooth_rgb(16, 20, seed=5).astype(np.uint16) * 257
    px = base[..., :channels] if channels <= 3 else np.dstack([base, np.full((16, 20), 65535, np.uint16)])
    px = (px + rng.integers(0, 200, px.shape)).clip(0, 65535).astype(np.uint16)  # really uses the low byte
    with open(path, "wb") as fp:
        write_png16(fp, px)
    return path, px


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(smooth_rgb(16, 16, seed=s)).convert("P") for s in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def bad_corpus(folder: Path) -> dict[str, Path]:
    """A corpus of bad and awkward inputs, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["empty"] = folder / "empty.jpg"
    files["empty"].write_bytes(b"")
    noisy = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = jpeg_bytes(noisy, quality=90)
    files["truncated_jpeg"] = folder / "truncated.jpg"
    files["truncated_jpeg"].write_bytes(good[: len(good) * 3 // 4])  # headers intact, scan data cut
    files["text_as_jpg"] = folder / "notes.jpg"
    files["text_as_jpg"].write_text("this is not a photo\n")
    files["bomb_png"] = bomb_png(folder / "bomb.png")
    files["cmyk_jpeg"] = folder / "cmyk.jpg"
    Image.fromarray(smooth_rgb(16, 20)).convert("CMYK").save(files["cmyk_jpeg"], quality=95)
    files["p_transparent"] = p_mode_transparent(folder / "palette.png")
    files["png16"], _ = png16(folder / "deep16.png")
    files["exif_rotated"] = exif_rotated_jpeg(folder / "rotated.jpg")
    files["unicode_name"] = save_png(folder / "фото 写真 ü.png", smooth_rgb(16, 20, seed=9))
    files["animated_gif"] = animated_gif(folder / "anim.gif")
    files["grey"] = save_png(folder / "grey.png", smooth_rgb(16, 20)[..., 0])
    return files
