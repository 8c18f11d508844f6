"""16-bit-per-channel PNG and TIFF codecs for the cases Pillow cannot hold in memory.

Pillow has no mode for 16-bit RGB(A): it silently reduces 48/64-bit PNG and TIFF to 8 bits
per channel. So that "16-bit in -> 16-bit out" holds, this module

* writes 16-bit PNG (PNG spec, ISO/IEC 15948: IHDR bit depth 16, filter type 0, iCCP and eXIf
  chunks for the colour profile and EXIF),
* writes 16-bit baseline TIFF (TIFF 6.0: one image, chunky, Adobe-deflate strips, ICC tag 34675,
  descriptive ASCII tags such as Make or Software),
* reads 16-bit integer and 32-bit float TIFF in the common baseline layout (strips, chunky, no
  compression or deflate, predictor 1, or 2 for integers). Anything else returns None and the
  caller falls back to Pillow (at 8 bits for 16-bit RGB).

16-bit PNG *reading* uses torchvision's libpng decoder (``decode_png(..., UNCHANGED)``), which
keeps all 16 bits and handles interlacing.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types by channel count: grey, grey+alpha, RGB, RGBA.
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def png_bit_depth(head: bytes) -> int | None:
    """Bit depth from a PNG's IHDR (first 26 bytes of the file), None if not a PNG."""
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(fp: BinaryIO, pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> None:
    """Write (H, W) or (H, W, C) uint16 pixels, C in 1..4, as a 16-bit PNG."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    # (H, W, C) big-endian samples -> (H, bytes per row)
    raw = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    # Filter type 0 (None) on every row: a leading zero byte per scanline.
    filtered = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1)
    comp = zlib.compressobj(6)
    idat = comp.compress(filtered.tobytes()) + comp.flush()
    out = [PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, _PNG_COLOUR_TYPE[c], 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    for part in out:
        fp.write(part)


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG as (H, W, C) uint16 with all bits kept."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torchvision 0.29 flags its image codecs as deprecated in favour of torchcodec, which
        # this project does not depend on; libpng behind it is what we want until then.
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_png

        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        img = decode_png(data, mode=ImageReadMode.UNCHANGED)  # (C, H, W) uint16
    return img.permute(1, 2, 0).contiguous().numpy().astype(np.uint16, copy=False)


# --- TIFF -----------------------------------------------------------------------------------------
_ASCII, _SHORT, _LONG, _UNDEFINED = 2, 3, 4, 7
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 16: 8}


def write_tiff16(fp: BinaryIO, pixels: np.ndarray, icc: bytes | None = None,
                 tags: dict[int, str] | None = None) -> None:
    """Write (H, W) or (H, W, C) uint16 pixels as a little-endian, deflate-compressed TIFF.

    ``tags``: ASCII tags to add (e.g. 271 Make, 305 Software), by tag number."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    row_bytes = w * c * 2
    rows_per_strip = max(1, min(h, (1 << 20) // row_bytes))
    data = pixels.astype("<u2")
    strips = [zlib.compress(data[y : y + rows_per_strip].tobytes(), 6) for y in range(0, h, rows_per_strip)]

    entries: list[tuple[int, int, list[int] | bytes]] = [
        (256, _LONG, [w]),
        (257, _LONG, [h]),
        (258, _SHORT, [16] * c),
        (259, _SHORT, [8]),  # Adobe deflate
        (262, _SHORT, [2 if c >= 3 else 1]),  # RGB or BlackIsZero
        (273, _LONG, [0] * len(strips)),  # strip offsets, patched below
        (277, _SHORT, [c]),
        (278, _LONG, [rows_per_strip]),
        (279, _LONG, [len(s) for s in strips]),
        (284, _SHORT, [1]),  # chunky
    ]
    if c in (2, 4):
        entries.append((338, _SHORT, [2]))  # unassociated alpha
    for tag, text in (tags or {}).items():
        entries.append((tag, _ASCII, text.encode("latin-1", "replace") + b"\x00"))
    if icc:
        entries.append((34675, _UNDEFINED, icc))
    entries.sort(key=lambda e: e[0])  # TIFF 6.0: IFD entries in ascending tag order

    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_offset = ifd_offset + ifd_size
    extra = bytearray()
    value_fields: list[bytes] = []
    value_offsets: dict[int, int] = {}
    for tag, typ, values in entries:
        payload = bytes(values) if typ in (_ASCII, _UNDEFINED) else struct.pack(
            "<" + ("H" if typ == _SHORT else "I") * len(values), *values)
        if len(payload) <= 4:
            value_fields.append(payload.ljust(4, b"\x00"))
        else:
            value_offsets[tag] = extra_offset + len(extra)
            value_fields.append(struct.pack("<I", value_offsets[tag]))
            extra += payload + (b"\x00" if len(payload) % 2 else b"")
    data_offset = extra_offset + len(extra)
    offsets, pos = [], data_offset
    for s in strips:
        offsets.append(pos)
        pos += len(s)
    # Now that the strip positions are known, rewrite the StripOffsets values.
    offset_payload = struct.pack("<" + "I" * len(offsets), *offsets)
    if len(offsets) == 1:
        value_fields[[e[0] for e in entries].index(273)] = offset_payload
    else:
        start = value_offsets[273] - extra_offset
        extra[start : start + len(offset_payload)] = offset_payload

    fp.write(b"II*\x00" + struct.pack("<I", ifd_offset))
    fp.write(struct.pack("<H", len(entries)))
    for (tag, typ, values), field in zip(entries, value_fields):
        fp.write(struct.pack("<HHI", tag, typ, len(values)) + field)
    fp.write(struct.pack("<I", 0))
    fp.write(bytes(extra))
    for s in strips:
        fp.write(s)


def read_tiff16(path: Path) -> np.ndarray | None:
    """A baseline 16-bit TIFF as (H, W, C) uint16, or None for layouts this reader skips."""
    px = read_tiff_samples(path)
    return px if px is not None and px.dtype == np.uint16 else None


class TooLarge(ValueError):
    """The image has more pixels than the caller allows; raised before any strip is decompressed."""

    def __init__(self, width: int, height: int):
        super().__init__(f"{width}x{height} pixels")
        self.width, self.height = width, height


def read_tiff_samples(path: Path, max_pixels: int | None = None) -> np.ndarray | None:
    """A baseline TIFF of 16-bit integer or 32-bit float samples as (H, W, C) uint16 or float32, or None
    for layouts this reader skips; :class:`TooLarge` above ``max_pixels``."""
    buf = Path(path).read_bytes()
    if buf[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "<" if buf[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(e + "I", buf, 4)
    (n,) = struct.unpack_from(e + "H", buf, ifd)
    tags: dict[int, list[int]] = {}
    for i in range(n):
        tag, typ, count, raw = struct.unpack_from(e + "HHI4s", buf, ifd + 2 + 12 * i)
        if typ not in (_SHORT, _LONG):
            continue
        size = _TYPE_SIZE[typ] * count
        src = raw if size <= 4 else buf[struct.unpack(e + "I", raw)[0]:][:size]
        tags[tag] = list(struct.unpack(e + ("H" if typ == _SHORT else "I") * count, src[:size]))
    w, h = tags.get(256, [0])[0], tags.get(257, [0])[0]
    spp = tags.get(277, [1])[0]
    compression = tags.get(259, [1])[0]
    predictor = tags.get(317, [1])[0]
    bits, sample_format = set(tags.get(258, [0])), set(tags.get(339, [1]))
    if (bits, sample_format) == ({16}, {1}):
        dtype = np.dtype(e + "u2")
    elif (bits, sample_format) == ({32}, {3}) and predictor == 1:
        dtype = np.dtype(e + "f4")
    else:
        return None
    if (not 1 <= spp <= 4 or tags.get(284, [1])[0] != 1 or compression not in (1, 8, 32946)
            or predictor not in (1, 2) or 322 in tags or 273 not in tags):
        return None
    if max_pixels is not None and w * h > max_pixels:
        raise TooLarge(w, h)
    rows_per_strip = tags.get(278, [h])[0]
    parts = []
    for off, size in zip(tags[273], tags[279]):
        chunk = buf[off : off + size]
        parts.append(zlib.decompress(chunk) if compression != 1 else chunk)
    raw = b"".join(parts)
    need = h * w * spp * dtype.itemsize
    if len(raw) < need or rows_per_strip <= 0:
        raise ValueError("TIFF strip data is shorter than the image (truncated file)")
    px = np.frombuffer(raw[:need], dtype=dtype).reshape(h, w, spp).astype(dtype.newbyteorder("="))
    if predictor == 2:
        # Horizontal differencing: each sample stores the difference to its left neighbour, mod 2^16.
        px = np.cumsum(px, axis=1, dtype=np.uint16)
    return px
