"""Automatic checks for the artefacts a short GAN draws: a regular pattern (cross-hatch, checkerboard) laid over
the picture at one spatial frequency, which the photo does not have (`periodic_score`), and a pixelation on the LR
grid (`blockiness_score`), and grain or mottle where the photo is flat (`flat_noise_score`; these two at the end).

Neither NIQE nor HaarPSI flags it (both rewarded a cross-hatched output, issue 21), and a peak search at the 2/4-px
grid of the upsampler misses a pattern at a learned, tilted frequency. This one looks at every frequency:

    P_x(f)   = mean over 64x64 windows (Hann, step 32) of |FFT(window of Y)|^2       for the output and the photo
    r(f)     = log((P_out(f) + e) / (P_photo(f) + e))                                  e = 1e-3 mean P_photo
    spike(f) = r(f) - median of r over the 7x7 frequencies around f (wrapping)         DC's 5x5 left out
    score    = exp(max_f spike(f))

A pattern repeated across the picture adds up at its frequency in the window-averaged spectrum; the photo's own
periodic content (blinds, fences, fabric) is in P_photo too and divides out, and an output that is softer or
sharper than the photo over a band of frequencies moves r smoothly, which the local median follows. Bicubic
interpolation itself mirrors strong stripes of the LR into an image frequency the photo lacks (a faithful
upscaler may keep it): with `baseline` (bicubic of the same LR) a peak counts only where it is in neither. So the score
is "how many times stronger is the strongest isolated frequency of the output than its neighbours, beyond the
photo's". Measured on 256-px val crops: bicubic 2.1-4.8, Real-ESRGAN 2.4-4.4; a cross-hatch of +-4 grey levels
(scaled by the local texture) over Real-ESRGAN's output 5.4-48, of +-8: 17-128. FLAG is set between the two.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, median_filter

from .metrics import to_y

WINDOW = 64
STEP = 32
NEIGHBOURS = 7
FLAG = 8.0  # scores above this: a regular pattern the photo does not have


def window_power(y: np.ndarray, window: int = WINDOW, step: int = STEP) -> np.ndarray:
    """Mean power spectrum (fftshifted, window x window) of the Hann-windowed, mean-removed tiles of a Y image."""
    if min(y.shape) < window:
        raise ValueError(f"image {y.shape} is smaller than the {window} px window")
    hann = np.outer(np.hanning(window), np.hanning(window))
    tiles = np.lib.stride_tricks.sliding_window_view(y, (window, window))[::step, ::step]
    tiles = tiles.reshape(-1, window, window)
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    return np.fft.fftshift((np.abs(np.fft.fft2(tiles * hann)) ** 2).mean(axis=0))


def _spikes(p_out: np.ndarray, p_ref: np.ndarray) -> np.ndarray:
    eps = 1e-3 * p_ref.mean()
    ratio = np.log((p_out + eps) / (p_ref + eps))
    spike = ratio - median_filter(ratio, size=NEIGHBOURS, mode="wrap")
    c = WINDOW // 2
    spike[c - 2:c + 3, c - 2:c + 3] = 0.0  # DC and the lowest frequencies: a colour or exposure shift
    return spike


def periodic_score(out: np.ndarray, photo: np.ndarray, baseline: np.ndarray | None = None) -> float:
    """The strongest isolated spectral peak of `out` beyond the photo's (module docstring) and, with `baseline`
    (bicubic of the same LR), beyond that too; uint8 RGB or Y images of one size. About 2-5 for honest
    upscalers, above FLAG for a regular pattern."""
    p_out = window_power(to_y(out))
    spike = _spikes(p_out, window_power(to_y(photo)))
    if baseline is not None:
        spike = np.minimum(spike, _spikes(p_out, window_power(to_y(baseline))))
    return float(np.exp(spike.max()))


BLOCK_FLAG = 1.5  # blockiness above this: the output is pixelated on the LR grid
MAX_BLOCKY = 100.0  # the ratio of an image that steps only at the cell borders (and a cap on any other)


def _border_ratio(y: np.ndarray, axis: int, scale: int) -> float:
    """Mean |step| between neighbouring pixels across the borders of the scale-px cells over the mean inside."""
    steps = np.abs(np.diff(y.astype(np.float64), axis=axis))
    phase = np.arange(steps.shape[axis]) % scale
    border = steps.take(np.flatnonzero(phase == scale - 1), axis=axis).mean()
    inside = steps.take(np.flatnonzero(phase != scale - 1), axis=axis).mean()
    if inside < 1e-6:  # flat inside the cells: no steps at all (a flat image) is no preference, only borders is
        return 1.0 if border < 1e-6 else MAX_BLOCKY
    return float(min(border / inside, MAX_BLOCKY))


def blockiness_score(out: np.ndarray, photo: np.ndarray, scale: int = 4) -> float:
    """How much more the output changes across the borders of the LR pixels' scale x scale cells than inside
    them, relative to the photo (uint8 RGB or Y, one size). The other artefact a GAN on a pixel-shuffle
    upsampler draws once a loss keeps it off the grid frequencies (MODEL_CARD.md): each LR pixel a flat block
    with sharp borders, a pixelation whose blocks vary with the picture, so `periodic_score` sees little of it.
    Measured on val's 512 px crops: bicubic 1.11-1.30 (its kernel phases), Real-ESRGAN 0.98-1.06, hitok's
    faithful restorer 0.96-1.21; a GAN run's pixelated live weights 2.3-5.3. Above BLOCK_FLAG: pixelated."""
    y, g = to_y(out), to_y(photo)
    ratio = (_border_ratio(y, 0, scale) + _border_ratio(y, 1, scale)) / 2
    return ratio / ((_border_ratio(g, 0, scale) + _border_ratio(g, 1, scale)) / 2)


FLAT_FLAG = 1.0  # grey levels of detail where the photo is flat: above this, grain or mottle a person sees
FLAT_LEVEL = 1.0  # a 16 px window is flat where the photo's detail RMS (below) is at most this, in grey levels
FLAT_WINDOW = 16


def _detail_rms(y: np.ndarray, window: int = FLAT_WINDOW) -> np.ndarray:
    """RMS of y - Gaussian blur (sigma 3 px) per window x window tile, in grey levels: detail up to ~8 px."""
    y = y.astype(np.float64)
    detail = y - gaussian_filter(y, 3.0)
    h, w = (y.shape[0] // window) * window, (y.shape[1] // window) * window
    tiles = detail[:h, :w].reshape(h // window, window, w // window, window)
    return np.sqrt((tiles ** 2).mean(axis=(1, 3)))


def flat_noise_score(out: np.ndarray, photo: np.ndarray) -> float | None:
    """How much detail the output draws where the photo is flat (sky, walls, a dish): the mean detail RMS of the
    output over the 16 px windows whose detail RMS in the photo is at most FLAT_LEVEL grey levels (uint8 RGB or
    Y, one size); None when under 2 % of the windows are flat. What a texture restorer fed noise draws when it
    has not learned where texture belongs (MODEL_CARD.md): mottle or grain on flat areas, which NIQE rewards and
    `periodic_score` cannot see (it has no one frequency). Measured on val's 512 px crops (crops with flat
    areas): Real-ESRGAN 0.49-0.82, hitok's faithful restorer 0.29-0.37, bicubic 0.29-0.34 (1.16 on compressed
    LR: the input's JPEG noise kept); the faithful restorer with untrained noise inputs 1.68-1.96."""
    photo_rms, out_rms = _detail_rms(to_y(photo)), _detail_rms(to_y(out))
    flat = photo_rms <= FLAT_LEVEL
    if flat.size == 0 or flat.mean() < 0.02:
        return None
    return float(out_rms[flat].mean())
