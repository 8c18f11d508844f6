"""Full-reference SR metrics on the Y channel: PSNR and SSIM, as SR papers report them.

Conventions follow BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True`` (the numbers most x4 SR tables are computed with):

- Y is ITU-R BT.601 luma on the 16-235 scale (MATLAB ``rgb2ycbcr``), kept as float
  (not rounded back to uint8);
- ``shave`` pixels are dropped from every edge first (the scale factor, 4, by custom);
- SSIM is Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error
  Visibility to Structural Similarity", IEEE TIP 13(4), 2004, Eq. 13, computed as in the
  authors' ``ssim_index.m``: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  L = 255, statistics only where the window fits inside the image ('valid'), SSIM map
  averaged; no automatic downsampling.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from hitok.psnr import psnr

# ITU-R BT.601 luma weights for 8-bit RGB -> Y in [16, 235].
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def to_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float64 Y (H, W) in [16, 235]; a 2-D array passes as Y."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    return img.astype(np.float64) @ _Y_WEIGHTS + 16.0


def _y_pair(a: np.ndarray, b: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    ya, yb = to_y(a), to_y(b)
    if shave > 0:
        ya = ya[shave:-shave, shave:-shave]
        yb = yb[shave:-shave, shave:-shave]
    if ya.size == 0:
        raise ValueError(f"nothing left of a {a.shape[:2]} image after shaving {shave} px")
    return ya, yb


def psnr_y(a: np.ndarray, b: np.ndarray, shave: int = 4) -> float:
    """PSNR in dB between two uint8 RGB images on Y; inf for identical images."""
    return psnr(*_y_pair(a, b, shave), peak=255.0)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # fspecial('gaussian', 11, 1.5) is the outer product of this normalised kernel.
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """SSIM map (H - 10, W - 10) of two float images on the 0-255 scale (Eq. 13)."""
    g = _gaussian_1d()
    half = len(g) // 2
    if min(ya.shape) <= 2 * half:
        raise ValueError(f"SSIM needs images larger than 11x11, got {ya.shape}")

    def filt(x):
        # Any border mode works: the 'valid' crop below keeps only full-window outputs.
        out = correlate1d(correlate1d(x, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")
        return out[half:-half, half:-half]

    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b = filt(ya), filt(yb)
    var_a = filt(ya * ya) - mu_a * mu_a
    var_b = filt(yb * yb) - mu_b * mu_b
    cov = filt(ya * yb) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def ssim_y(a: np.ndarray, b: np.ndarray, shave: int = 4) -> float:
    """Mean SSIM between two uint8 RGB images on Y; 1.0 for identical images."""
    ya, yb = _y_pair(a, b, shave)
    return float(np.mean(ssim_map(ya, yb)))
