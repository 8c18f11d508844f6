"""Issue 13: is `hitok batch` bound by the model or by image decode/encode? Times one photo's three phases
(read, upscale, write PNG / JPEG) through the library, as `hitok batch` runs them one after another.

    python bench/levers/batch_io.py PHOTO [LR_SIDE ...]   # centre crops of these LR sides (default 256 512)
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

from hitok import Upscaler, load_model, read_image, write_image
from hitok.imageio import Picture

photo = Path(sys.argv[1])
sides = [int(s) for s in sys.argv[2:]] or [256, 512]
upscaler = Upscaler(load_model(), device="cpu", dtype="auto")
full = read_image(photo).pixels
for side in sides:
    h, w = full.shape[:2]
    crop = full[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        write_image(src, Picture(pixels=crop), "PNG")
        t0 = time.perf_counter(); pic = read_image(src); t1 = time.perf_counter()
        out, _ = upscaler.upscale_picture(pic); t2 = time.perf_counter()
        write_image(Path(tmp) / "out.png", out, "PNG"); t3 = time.perf_counter()
        write_image(Path(tmp) / "out.jpg", out, "JPEG"); t4 = time.perf_counter()
    print(f"{side}x{side} LR -> {out.size[0] * out.size[1] / 1e6:.1f} MP: read {t1 - t0:.2f} s, upscale {t2 - t1:.1f} s, "
          f"write PNG {t3 - t2:.2f} s, JPEG {t4 - t3:.2f} s; I/O share (PNG) {(t1 - t0 + t3 - t2) / (t3 - t0):.1%}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
