"""HaarPSI: the Haar wavelet-based perceptual similarity index, colour version, in numpy.

R. Reisenhofer, S. Bosse, G. Kutyniok and T. Wiegand, "A Haar wavelet-based perceptual similarity index for
image quality assessment", Signal Processing: Image Communication 61, 2018, Sec. 3 (Eqs. 10-13 for the grey
index, Eq. 14 for colour). Constants and details as the authors' reference code (``HaarPSI.m``) has them:

* images on 0..255; RGB -> YIQ (Y .299/.587/.114, I .596/-.274/-.322, Q .211/-.523/.312);
* preprocessing ("preprocessWithSubsampling", on by default there and here): each channel 2x2-averaged,
  then every second pixel kept -- the viewing-distance model of the paper;
* Y: 3 scales of 2-D Haar filters ``2^-k * ones(2^k, 2^k)`` with one half negated, horizontal and vertical;
  the local similarity per orientation is the mean over scales 1 and 2 of ``(2ab + C) / (a^2 + b^2 + C)``
  on the magnitudes, the weight the larger magnitude of the two images at scale 3;
* I and Q: magnitudes after a 2x2 mean, their similarity averaged, weighted by the mean of the Y weights;
* score: ``(logit(sum(w * sigmoid(alpha * s)) / sum(w)) / alpha) ** 2`` with C = 30, alpha = 4.2;
  1 for identical images, lower for worse.

Filters are applied as MATLAB's ``conv2(x, h, 'same')`` with zero padding: for an even kernel of side k,
output i sees inputs i - k/2 + 1 .. i + k/2 (scipy's ``'same'`` takes the other half-pixel).
"""

from __future__ import annotations

import numpy as np

C = 30.0
ALPHA = 4.2
SCALES = 3
_YIQ = np.array([[0.299, 0.587, 0.114],
                 [0.596, -0.274, -0.322],
                 [0.211, -0.523, 0.312]])


def _window_sums(x: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums along ``axis`` over the two halves of a length-k window: (i-k/2+1 .. i, i+1 .. i+k/2), zero outside."""
    half = k // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)  # MATLAB's k/2 - 1 leading zeros, plus one so that prefix sums start at 0
    c = np.cumsum(np.pad(x, pad), axis=axis)
    n = x.shape[axis]

    def at(offset: int) -> np.ndarray:  # prefix sum up to (and including) input index i + offset, every i
        return np.take(c, np.arange(n) + half + offset, axis=axis)

    lo, mid, hi = at(-half), at(0), at(half)
    return mid - lo, hi - mid


def _box(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    upper, lower = _window_sums(x, k, axis)
    return upper + lower


def haar_coefficients(x: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Haar responses of a 2-D array at ``scale`` (1-based): (across rows, across columns), as ``conv2 'same'``."""
    k = 2**scale
    upper, lower = _window_sums(_box(x, k, axis=1), k, axis=0)
    left, right = _window_sums(_box(x, k, axis=0), k, axis=1)
    # conv2 flips the kernel: its negated first half meets the second half of the window.
    return (upper - lower) / k, (left - right) / k


def _mean2x2(x: np.ndarray) -> np.ndarray:
    """``conv2(x, ones(2, 2) / 4, 'same')``: mean of (i, j), (i, j+1), (i+1, j), (i+1, j+1), zero past the end."""
    return _box(_box(x, 2, axis=0), 2, axis=1) / 4.0


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (2.0 * a * b + C) / (a * a + b * b + C)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-ALPHA * x))


def haarpsi(ref: np.ndarray, dist: np.ndarray, shave: int = 0, subsample: bool = True) -> float:
    """HaarPSI of ``dist`` against ``ref``: (H, W, 3) RGB or (H, W) grey, values 0..255 (uint8 or float).

    In [0, 1]; 1.0 for identical images. ``shave``: pixels dropped from every edge first (SR's custom, as
    for PSNR); ``subsample``: the reference code's viewing-distance preprocessing, on by default as there.
    """
    ref, dist = np.asarray(ref, np.float64), np.asarray(dist, np.float64)
    if ref.shape != dist.shape:
        raise ValueError(f"images differ in shape: {ref.shape} vs {dist.shape}")
    if shave > 0:
        ref, dist = ref[shave:-shave, shave:-shave], dist[shave:-shave, shave:-shave]
    colour = ref.ndim == 3 and ref.shape[2] == 3
    if not (ref.ndim == 2 or colour):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {ref.shape}")
    if min(ref.shape[:2]) < 2:
        raise ValueError(f"HaarPSI needs at least 2x2 pixels, got {ref.shape[:2]}")

    def channels(img: np.ndarray) -> np.ndarray:  # (H, W, 3) RGB -> (3, H', W') YIQ; grey -> (1, H', W')
        yiq = np.moveaxis(img @ _YIQ.T, -1, 0) if colour else img[None]
        return np.stack([_mean2x2(c)[::2, ::2] for c in yiq]) if subsample else yiq

    a, b = channels(ref), channels(dist)
    coef_a = [haar_coefficients(a[0], s) for s in range(1, SCALES + 1)]  # per scale: (across rows, across cols)
    coef_b = [haar_coefficients(b[0], s) for s in range(1, SCALES + 1)]
    sims, weights = [], []
    for ori in range(2):
        weights.append(np.maximum(np.abs(coef_a[-1][ori]), np.abs(coef_b[-1][ori])))
        sims.append(sum(_similarity(np.abs(coef_a[s][ori]), np.abs(coef_b[s][ori])) for s in range(2)) / 2.0)
    if colour:
        iq = [_similarity(np.abs(_mean2x2(a[c])), np.abs(_mean2x2(b[c]))) for c in (1, 2)]
        sims.append((iq[0] + iq[1]) / 2.0)
        weights.append((weights[0] + weights[1]) / 2.0)
    s, w = np.stack(sims), np.stack(weights)  # (2 or 3, H', W') each
    total = float(w.sum())
    if total == 0.0:
        # No scale-3 response anywhere, not even at the zero-padded rim: both luma planes are all zero.
        return 1.0 if np.array_equal(a, b) else 0.0
    m = float((_sigmoid(s) * w).sum()) / total
    return float((np.log(m / (1.0 - m)) / ALPHA) ** 2)
