"""The shipped default model: present as package data, self-describing, small, usable offline — and trained:
on a sharp synthetic scene it must do what a randomly initialised model of the same preset cannot."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from hitok.bench.metrics import psnr_y
from hitok import model_store
from hitok.imageio import Picture
from hitok.upscaler import Upscaler
from hitok.models import read_metadata

PATH = model_store.default_model_path()
pytestmark = pytest.mark.skipif(not PATH.is_file(), reason="no shipped default in this checkout")


def sharp_scene(side: int = 128, seed: int = 0) -> np.ndarray:
    """(side, side, 3) uint8: coloured discs, boxes and lines on a shaded ground, drawn at 4x and box-reduced
    (anti-aliased edges; nothing a model could have memorised from the training photos)."""
    rng = np.random.default_rng(seed)
    big = side * 4
    y, x = np.mgrid[0:big, 0:big].astype(np.float32) / big
    ground = np.stack([0.35 + 0.3 * x, 0.45 + 0.2 * y, 0.55 - 0.25 * x * y], -1)
    im = Image.fromarray((ground * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    for _ in range(14):
        cx, cy, r = int(rng.integers(big)), int(rng.integers(big)), int(rng.integers(big // 40, big // 8))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour())
    for _ in range(10):
        x0, y0 = int(rng.integers(big)), int(rng.integers(big))
        draw.rectangle([x0, y0, x0 + int(rng.integers(8, big // 5)), y0 + int(rng.integers(8, big // 5))],
                       fill=colour())
    for _ in range(12):
        draw.line([int(v) for v in rng.integers(0, big, 4)], fill=colour(), width=int(rng.integers(4, 14)))
    return np.asarray(im.reduce(4))


def _pil_resize(rgb: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.BICUBIC))


@pytest.fixture(scope="module")
def scene():
    hr = sharp_scene(128)
    lr = _pil_resize(hr, 32)
    return hr, lr, psnr_y(_pil_resize(lr, 128), hr)


@pytest.fixture(scope="module")
def shipped():
    return model_store.load(None, torch.device("cpu")).model


def _upscale(model, lr: np.ndarray, **kw) -> np.ndarray:
    up = Upscaler(model, torch.device("cpu"), torch.float32, **kw)
    out, _ = up.upscale_picture(Picture(pixels=lr))
    return out.pixels


def test_shipped_default_is_a_small_fp16_bundle_under_60_mb(shipped):
    assert PATH.stat().st_size <= 60 * 2**20
    meta = read_metadata(PATH)
    assert meta["preset"] == "small" and meta["exported_half"] == "true" and meta["vfm"] == "none"
    assert shipped.config.name == "small" and shipped.has_encoder  # tokenize --source hr works
    assert shipped.guided and 0 < shipped.config.fidelity <= 1


def test_default_path_beats_bicubic_on_a_sharp_scene(shipped, scene):
    """The CLI's default (the model's fidelity, colour fix on) is sharper AND closer to the truth than bicubic.
    A randomly initialised small model with the same settings lands below bicubic (THRESHOLDS)."""
    hr, lr, bicubic = scene
    out = _upscale(shipped, lr)
    assert out.shape == hr.shape and out.dtype == np.uint8
    assert psnr_y(out, hr) > bicubic + THRESHOLDS["default_gain_db"]


def test_the_tokens_alone_stay_near_bicubic(shipped, scene):
    """--fidelity 0 --no-color-fix: the generator's tokens through the token-only decoder (the paper's path)."""
    hr, lr, bicubic = scene
    out = _upscale(shipped, lr, fidelity=0.0, color_fix=False)
    assert psnr_y(out, hr) > bicubic - THRESHOLDS["tokens_loss_db"]


def flat_and_textured_scene(side: int = 128, seed: int = 0) -> np.ndarray:
    """(side, side, 3) uint8: a smooth blue-grey gradient (left half) beside a green random texture of ~2 px
    grain (right half): where a detail setting should draw texture and where it must not."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([0.45 + 0.1 * y, 0.6 + 0.05 * x, 0.75 - 0.1 * y], -1)
    grain = gaussian_filter(rng.standard_normal((side, side)), 1.2)
    grain = 0.12 * grain / grain.std()
    img[:, side // 2:] = np.array([0.35, 0.5, 0.25]) + grain[:, side // 2:, None] * np.array([1.0, 1.2, 0.8])
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def test_the_detail_setting_draws_texture_and_keeps_a_compressed_flat_area_flat(shipped):
    """--texture 0.7 (the documented detail setting) on the eval's compressed LR (blur, noise 5/255, JPEG 70) of
    flat_and_textured_scene: at least 1.6x the default's detail in the textured half, the flat half under the
    eval's flat-noise flag, and PSNR-Y no more than 0.5 dB under the default's. A texture restorer without noise
    fails the first; one with random weights, or the shipped one without its noise mask, the second (THRESHOLDS)."""
    from hitok.bench.artefacts import FLAT_FLAG, _detail_rms, flat_noise_score
    from hitok.bench.evaluate import make_lr
    from hitok.bench.metrics import to_y

    hr = flat_and_textured_scene()
    lr = make_lr(hr, "realistic", 0)
    default, detail = _upscale(shipped, lr), _upscale(shipped, lr, texture=0.7)
    grain = {k: _detail_rms(to_y(v))[:, 5:].mean() for k, v in (("default", default), ("detail", detail))}
    assert grain["detail"] > THRESHOLDS["detail_grain_ratio"] * grain["default"], grain
    assert flat_noise_score(detail, hr) <= FLAT_FLAG
    assert psnr_y(detail, hr, 4) > psnr_y(default, hr, 4) - 0.5


# Measured on flat_and_textured_scene (2026-12-06, default id fb12888823c5, fp32 restore): detail RMS of the
# textured half default 6.0, --texture 0.7 12.4 (photo 23.4); flat 0.23 / 0.63; PSNR-Y 23.99 / 24.33. The same
# model at 0.7 without its noise mask: flat 1.41; with a randomly initialised texture restorer: flat 3.66, detail
# 10.4 (1.7x); the previous file (6549bb3ef0eb): flat 0.79, detail 11.7.
# Measured on this scene (seed 0) when the thresholds were set (2026-12-05, default id bfe106182d2e, fp32): shipped
# default +0.18 dB over bicubic with its defaults (the restorer alone), -3.84 dB for the tokens alone; the same
# model with a freshly initialised restorer +0.04 dB, with its small-started last layer given random weights
# -2.19 dB; a random small model's tokens -6.66 dB. (The restorer gains +2.9 dB on the val photos; on this
# synthetic scene of flat colours and hard edges it gains little: MODEL_CARD.md, failure cases.)
THRESHOLDS = {"default_gain_db": 0.10, "tokens_loss_db": 5.0, "detail_grain_ratio": 1.6}
