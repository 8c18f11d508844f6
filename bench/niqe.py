"""NIQE: the "completely blind" natural image quality evaluator.

A. Mittal, R. Soundararajan and A. C. Bovik, "Making a Completely Blind Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013, following the authors' MATLAB
release (2012) step for step so that scores match it:

1. luminance of the image, rounded to the 8-bit grid: BT.601 Y by default (what BasicSR
   scores; the input that reproduces the MATLAB 5.7296 BasicSR quotes for baboon.png), or
   the release's own ``rgb2gray``; cropped to whole 96x96 patches;
2. at two scales (full, then MATLAB ``imresize(im, 0.5)``: bicubic with antialiasing):
   MSCN coefficients (Eq. 1) with a 7x7 Gaussian of sigma 7/6 and C = 1;
   per patch (96 px, 48 px at the second scale) 18 features: the GGD fit of the MSCN
   coefficients (shape, spread) and AGGD fits of the products of neighbours along four
   orientations (shape, mean (Eq. 8), left and right spread) -- 36 per patch in all;
3. a multivariate Gaussian fitted to the patch features, compared with the pristine model
   (``niqe_modelparameters.mat``, see NIQE_NOTICE.md) by Eq. 10:
   ``sqrt((mu1 - mu2)^T ((S1 + S2) / 2)^+ (mu1 - mu2))``.

Lower is more natural. numpy + scipy only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import loadmat
from scipy.ndimage import correlate1d
from scipy.special import gamma

PATCH = 96
MODEL_FILE = Path(__file__).with_name("niqe_modelparameters.mat")

# First row of inv(NTSC YIQ matrix): the weights MATLAB's rgb2gray uses.
_GRAY_WEIGHTS = np.linalg.inv(
    np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
)[0]
# ITU-R BT.601 luma on the 16-235 scale (MATLAB rgb2ycbcr, BasicSR's "y").
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0

# Shape grid searched by the moment-matching AGGD fit, as in the MATLAB release.
_ALPHAS = np.arange(0.2, 10.0 + 1e-9, 0.001)
_RHO = gamma(2.0 / _ALPHAS) ** 2 / (gamma(1.0 / _ALPHAS) * gamma(3.0 / _ALPHAS))


# --------------------------------------------------------------------------------------
# MATLAB imresize (bicubic, antialiased)
# --------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_len, P) and 0-based source indices (out_len, P) along one axis.

    When shrinking, MATLAB stretches the kernel by 1/scale (antialiasing), so every input
    pixel contributes; out-of-range taps are mirrored including the edge pixel.
    """
    width = 4.0
    if scale < 1:
        width /= scale

        def kernel(x):
            return scale * _cubic(scale * x)
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in 1-based input coords
    left = np.floor(u - width / 2.0)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # (out_len, taps), 1-based
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    idx = mirror[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    keep = np.any(w != 0, axis=0)  # MATLAB drops all-zero tap columns
    return w[:, keep], idx[:, keep]


def imresize_matlab(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` (bicubic, antialiasing on) for a 2-D float array.

    Output side ``ceil(scale * side)``; no clipping or rounding (MATLAB leaves doubles as
    they are).
    """
    out = np.asarray(img, dtype=np.float64)
    # MATLAB resizes along the dimension with the smaller scale first; equal scales: rows.
    for axis in (0, 1):
        in_len = out.shape[axis]
        out_len = int(np.ceil(scale * in_len))
        w, idx = _resize_weights(in_len, out_len, scale)
        moved = np.moveaxis(out, axis, 0)  # (in_len, other)
        gathered = moved[idx]  # (out_len, taps, other)
        out = np.moveaxis(np.einsum("ot,ot...->o...", w, gathered), 0, axis)
    return out


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


def _gaussian_1d(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    # fspecial('gaussian', 7, 7/6) is the outer product of this normalised 1-D kernel.
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (Eq. 1), C = 1, replicate borders."""
    g = _gaussian_1d()

    def blur(x):
        return correlate1d(correlate1d(x, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    centred = img - mu
    # In a flat 7x7 neighbourhood the coefficient is exactly 0, but float residue (~1e-13
    # on the 0-255 scale) would give it a sign, and the AGGD fit counts every nonzero
    # value on one side: on baboon.png that alone moves the score by 1.4e-4. Snapping it
    # to 0 is what exact arithmetic gives, and lands on MATLAB's 5.72957338 to 1e-6.
    centred[np.abs(centred) < 1e-8] = 0.0
    return centred / (sigma + 1.0)


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit per row of x (n, m) -> shape alpha, left / right spread.

    Empty sides (e.g. a flat patch) give NaN, which the MVG fit later skips, as in MATLAB.
    """
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.sum(np.where(neg, x * x, 0.0), axis=1) / neg.sum(axis=1))
        right_std = np.sqrt(np.sum(np.where(pos, x * x, 0.0), axis=1) / pos.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    # Nearest grid point to the matched moment ratio (first one on ties, like MATLAB min).
    alpha = _ALPHAS[np.argmin((_RHO[None, :] - r_norm[:, None]) ** 2, axis=1)]
    alpha = np.where(np.isnan(r_norm), np.nan, alpha)
    with np.errstate(invalid="ignore"):
        ratio = np.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def patch_features(coeffs: np.ndarray, patch: int) -> np.ndarray:
    """18 features for each patch x patch block of an MSCN map -> (n_blocks, 18).

    Blocks in row-major order, the order MATLAB's blkproc + reshape leaves them in.
    """
    h, w = coeffs.shape
    nh, nw = h // patch, w // patch
    blocks = coeffs[: nh * patch, : nw * patch].reshape(nh, patch, nw, patch)
    blocks = blocks.transpose(0, 2, 1, 3).reshape(nh * nw, patch, patch)  # (n, p, p)

    alpha, bl, br = _aggd_fit(blocks.reshape(len(blocks), -1))
    feats = [alpha, (bl + br) / 2.0]
    # Horizontal, vertical, main- and anti-diagonal neighbours; circular within the block
    # as MATLAB's circshift.
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pairs = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd_fit(pairs.reshape(len(blocks), -1))
        with np.errstate(invalid="ignore"):
            mean = (br - bl) * gamma(2.0 / alpha) / gamma(1.0 / alpha)  # Eq. 8
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


# --------------------------------------------------------------------------------------
# Score
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine MVG model from the MATLAB release."""
    mat = loadmat(str(MODEL_FILE))
    return mat["mu_prisparam"].reshape(-1), mat["cov_prisparam"]


def to_luminance(img: np.ndarray, mode: Literal["y", "gray"] = "y") -> np.ndarray:
    """RGB uint8 (H, W, 3) or float in [0, 1] -> 8-bit-grid luminance as float64 (H, W).

    Float input is first quantised to uint8, so an array scores as the PNG it would save
    to. ``y``: BT.601 Y (16-235, MATLAB rgb2ycbcr); ``gray``: MATLAB rgb2gray. Both are
    rounded, as MATLAB does for uint8 images. A 2-D array is taken as luminance already.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    rgb = img.astype(np.float64)
    if mode == "gray":
        lum = rgb @ _GRAY_WEIGHTS
    elif mode == "y":
        lum = rgb @ _Y_WEIGHTS + 16.0
    else:
        raise ValueError(f"unknown luminance mode {mode!r}")
    return np.round(lum)


def niqe(img: np.ndarray, crop_border: int = 0, luminance: Literal["y", "gray"] = "y") -> float:
    """NIQE score of an RGB image (uint8, or float in [0, 1]); lower is more natural.

    crop_border: pixels dropped from each edge before scoring (SR benchmarks use the scale).
    luminance: ``"y"`` (default) scores the BT.601 Y channel, as BasicSR's calculate_niqe
    and most SR papers do; it reproduces MATLAB's 5.7296 on BasicSR's baboon.png.
    ``"gray"`` is the original release's rgb2gray of an RGB input (5.7496 on baboon.png).
    The image must keep at least two 96x96 patches (one MVG needs a covariance).
    """
    lum = to_luminance(img, luminance)
    if crop_border > 0:
        lum = lum[crop_border:-crop_border, crop_border:-crop_border]
    h, w = lum.shape
    nh, nw = h // PATCH, w // PATCH
    if nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {PATCH}x{PATCH} patches, got a {h}x{w} image")
    lum = lum[: nh * PATCH, : nw * PATCH]

    feats = []
    for scale in (1, 2):
        feats.append(patch_features(mscn(lum), PATCH // scale))
        if scale == 1:
            lum = imresize_matlab(lum, 0.5)
    feats = np.concatenate(feats, axis=1)  # (n_blocks, 36)

    mu_p, cov_p = pristine_model()
    mu_d = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]  # nancov drops incomplete rows
    cov_d = np.cov(complete, rowvar=False)
    diff = mu_p - mu_d
    return float(np.sqrt(diff @ np.linalg.pinv((cov_p + cov_d) / 2.0) @ diff))
