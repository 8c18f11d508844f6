"""Output size other than x4: ``--outscale S`` and ``--width`` / ``--height``.

The model always runs at its native x4; the x4 result is then resized to the target with a
Lanczos filter (Real-ESRGAN's ``--outscale`` does the same with cv2.resize and INTER_LANCZOS4).
Pillow's resize is antialiased: when reducing (S < 4) it widens the kernel by the reduction
factor, so the fine texture the model produced is averaged rather than aliased.

* ``--outscale S`` (any S > 0): output ``round(S * w) x round(S * h)``, default name ``NAME_x{S}``.
* ``--width W`` or ``--height H``: that side, the other one keeps the aspect ratio; both: exactly
  ``W x H``. Default names ``NAME_w{W}``, ``NAME_h{H}``, ``NAME_{W}x{H}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import UserError
from .imageio import Picture

MODEL_SCALE = 4


@dataclass(frozen=True)
class OutputSize:
    """What the user asked for; all None = the model's x4."""

    outscale: float | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.outscale is not None and (self.width is not None or self.height is not None):
            raise UserError("give either --outscale or --width/--height, not both")
        if self.outscale is not None and not (math.isfinite(self.outscale) and self.outscale > 0):
            raise UserError(f"--outscale {self.outscale:g}: must be a number above 0, e.g. 2 or 1.5")
        for name, value in (("--width", self.width), ("--height", self.height)):
            if value is not None and value < 1:
                raise UserError(f"{name} {value}: must be at least 1 pixel")

    @property
    def native(self) -> bool:
        """The model's own x4: no resize."""
        return self.width is None and self.height is None and self.outscale in (None, MODEL_SCALE)

    def tag(self) -> str:
        """The default output name's suffix: x4, x2, x1.5, w1000, h800 or 1000x800 (never an exponent: x0.001)."""
        if self.width is not None and self.height is not None:
            return f"{self.width}x{self.height}"
        if self.width is not None:
            return f"w{self.width}"
        if self.height is not None:
            return f"h{self.height}"
        s = MODEL_SCALE if self.outscale is None else self.outscale
        return "x" + np.format_float_positional(s, precision=6, trim="-")

    def options(self) -> str:
        """The size options as the user gave them, for messages."""
        given = [(name, v) for name, v in (("--outscale", self.outscale), ("--width", self.width),
                                            ("--height", self.height)) if v is not None]
        return " ".join(f"{name} {v:g}" for name, v in given) or f"x{MODEL_SCALE}"

    def target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for an upright input of ``width x height``; a side that would round to
        0 pixels is a UserError."""
        if self.width is not None and self.height is not None:
            exact = float(self.width), float(self.height)
        elif self.width is not None:
            exact = self.width, self.width * height / width
        elif self.height is not None:
            exact = self.height * width / height, self.height
        else:
            s = MODEL_SCALE if self.outscale is None else self.outscale
            exact = s * width, s * height
        size = round(exact[0]), round(exact[1])
        if min(size) < 1:
            raise UserError(f"{self.options()}: this {width}x{height} photo would come out {exact[0]:.3g}x"
                            f"{exact[1]:.3g} pixels, less than one pixel; ask for a larger size")
        return size

    def to_dict(self) -> dict:
        return {"outscale": self.outscale, "width": self.width, "height": self.height}


def shrink_warning(input_size: tuple[int, int], output_size: tuple[int, int]) -> str | None:
    """A note when the output is smaller than the photo itself on both sides: the upscale is thrown away."""
    if output_size[0] >= input_size[0] or output_size[1] >= input_size[1]:
        return None
    return (f"the output ({output_size[0]}x{output_size[1]}) is smaller than the photo itself "
            f"({input_size[0]}x{input_size[1]}): it is upscaled x{MODEL_SCALE}, then shrunk")


def _resize_plane(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8/uint16 -> (h, w, C) of the same dtype; Lanczos, antialiased, one channel at a time
    (Pillow has no 16-bit RGB mode, and a channel at a time keeps a 12 MP photo's x4 out of float RGB)."""
    planes = []
    for c in range(a.shape[2]):
        if a.dtype == np.uint8:
            planes.append(np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize(size, Image.LANCZOS)))
        else:
            big = Image.fromarray(a[..., c].astype(np.float32)).resize(size, Image.LANCZOS)  # mode "F"
            planes.append(np.clip(np.asarray(big), 0, 65535).round().astype(np.uint16))
    return np.stack(planes, axis=2)  # (h, w, C)


def resize_picture(pic: Picture, size: tuple[int, int]) -> Picture:
    """The picture at ``size`` = (width, height); metadata kept; the same object when already that size."""
    if pic.size == tuple(size):
        return pic
    alpha = None if pic.alpha is None else _resize_plane(pic.alpha[..., None], size)[..., 0]
    return Picture(pixels=_resize_plane(pic.pixels, size), alpha=alpha, icc=pic.icc, exif=pic.exif,
                   source_format=pic.source_format, warnings=pic.warnings)
