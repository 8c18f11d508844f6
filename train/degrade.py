"""Real-ESRGAN second-order degradation: HR crop -> synthetic x4 LR training input (HiTokSR Sec. 4.1).

HiTokSR "adopt[s] the degradation pipeline of Real-ESRGAN" (Wang et al., ICCV-W 2021, Sec. 3). One order
is blur -> random resize -> Gaussian or Poisson noise -> JPEG; the pipeline runs it twice (the second
time with milder ranges and a blur that may be skipped), resizes to the LR size, applies the final
sinc filter and JPEG in random order, and rounds to 8 bits. Defaults are the published x4plus recipe
(xinntao/Real-ESRGAN options/train_realesrnet_x4plus.yml; field names below are its keys). The code
is our own and runs per sample on the CPU so that it fits in DataLoader workers.

Deliberate differences from the original (which degrades whole batches on the GPU):
- every random choice is per sample and comes from one numpy Generator, so a seed fixes the output;
- JPEG is Pillow's libjpeg (IJG tables, 4:2:0) at an integer quality instead of DiffJPEG's emulation;
- blur uses the kernel at its drawn size (7..21) instead of zero-padded to 21 (same result), and an
  FFT for large kernels; images too small for reflect padding fall back to replicate padding.
- USM sharpening of the ground truth (gt_usm) is a target transform and lives with the loss, not here.

`degrade_eval` is a separate fixed, mild single-order degradation for the benchmark's realistic track.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .kernels import KERNEL_SIZES, gaussian_kernel, random_blur_kernel, random_final_sinc

_RESIZE_MODES = ("area", "bilinear", "bicubic")
_FFT_MIN_KERNEL = 7  # measured on one core: FFT (at a 5-smooth size) beats conv2d from 7x7 up
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class DegradationConfig:
    """Every range and probability of the pipeline; defaults are Real-ESRGAN x4plus.

    Noise sigmas are on the 0-255 scale; probabilities of (up, down, keep) for resizing; resize ranges
    are scale factors; a "2" suffix marks the second order. kernel_probs weighs kernels.KERNEL_TYPES.
    """

    # first order
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    # second order
    second_blur_prob: float = 0.8
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)  # also the final JPEG
    # final step
    final_sinc_prob: float = 0.8
    # not Real-ESRGAN: probability that a sample skips the pipeline and is only downscaled (antialiased bicubic,
    # 8-bit), so a short CPU run also sees clean inputs; 0 keeps the published pipeline (and its random draws)
    clean_prob: float = 0.0
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES
    # Real-ESRGAN resizes with plain F.interpolate, so down-scaling aliases; that aliasing is part of
    # the published training distribution. True low-passes bilinear/bicubic down-scaling instead.
    antialias: bool = False


# ----------------------------------------------------------------------------- building blocks


def _fast_fft_size(n: int) -> int:
    """Smallest m >= n with no prime factor above 5 (a 262-point FFT, 2 * 131, is ~3x slower than 270)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of x (B, C, H, W) with one (k, k) kernel, reflect-padded ("same" size)."""
    B, C, H, W = x.shape
    k = kernel.shape[-1]
    p = k // 2
    mode = "reflect" if p < min(H, W) else "replicate"  # reflect needs pad < size
    xp = F.pad(x.reshape(B * C, 1, H, W), (p, p, p, p), mode=mode)  # (B*C, 1, H+2p, W+2p)
    if k < _FFT_MIN_KERNEL:
        out = F.conv2d(xp, kernel.to(x.dtype).view(1, 1, k, k))
    else:
        # Circular convolution with the flipped kernel == correlation. With an FFT size >= the padded
        # size, wrap-around only reaches the first k-1 rows/cols, so the valid part starts at k-1.
        size = (_fast_fft_size(xp.shape[-2]), _fast_fft_size(xp.shape[-1]))
        spec = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(kernel.flip(0, 1).to(x.dtype), s=size)
        out = torch.fft.irfft2(spec, s=size)[..., k - 1:k - 1 + H, k - 1:k - 1 + W]
    return out.reshape(B, C, H, W)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    """F.interpolate to (h, w); antialias only applies to bilinear/bicubic and only when shrinking."""
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias and shrink)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode/decode (B, 3, H, W) in [0, 1] through Pillow JPEG (4:2:0); output is 8-bit-valued."""
    out = []
    for img in x:
        arr = (img.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality), subsampling=2)
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("RGB"))  # (H, W, 3) uint8
        out.append(torch.from_numpy(dec.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.dtype) / 255.0


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor(_GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)


def gaussian_noise(x: torch.Tensor, rng: np.random.Generator, sigma: float, gray: bool) -> torch.Tensor:
    """Zero-mean noise with std sigma/255; gray noise is one channel shared by R, G and B."""
    B, C, H, W = x.shape
    shape = (B, 1, H, W) if gray else (B, C, H, W)
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(x.dtype) * (sigma / 255.0)


def poisson_noise(x: torch.Tensor, rng: np.random.Generator, scale: float, gray: bool) -> torch.Tensor:
    """Shot noise as Real-ESRGAN models it: Poisson counts at 2^ceil(log2(#grey levels)) photons per
    unit intensity of the 8-bit-rounded image, minus that image, times scale."""
    img = _to_gray(x) if gray else x
    q = (img * 255.0).round().clamp(0, 255)
    levels = int(torch.bincount(q.flatten().to(torch.int64), minlength=256).count_nonzero())
    vals = 2.0 ** math.ceil(math.log2(max(levels, 1)))
    img_q = q / 255.0
    counts = rng.poisson(img_q.double().numpy() * vals)
    return (torch.from_numpy(counts).to(x.dtype) / vals - img_q) * scale


def _random_noise(x: torch.Tensor, rng: np.random.Generator, gaussian_prob: float,
                  sigma_range: tuple[float, float], poisson_range: tuple[float, float],
                  gray_prob: float) -> torch.Tensor:
    gray = rng.uniform() < gray_prob
    if rng.uniform() < gaussian_prob:
        noise = gaussian_noise(x, rng, float(rng.uniform(*sigma_range)), gray)
    else:
        noise = poisson_noise(x, rng, float(rng.uniform(*poisson_range)), gray)
    return (x + noise).clamp(0, 1)


def _random_scale(rng: np.random.Generator, probs: tuple[float, float, float],
                  scale_range: tuple[float, float]) -> float:
    updown = int(rng.choice(3, p=np.asarray(probs, dtype=np.float64) / sum(probs)))
    if updown == 0:
        return float(rng.uniform(1.0, scale_range[1]))
    if updown == 1:
        return float(rng.uniform(scale_range[0], 1.0))
    return 1.0


def _random_mode(rng: np.random.Generator) -> str:
    return _RESIZE_MODES[int(rng.integers(len(_RESIZE_MODES)))]


def _random_quality(rng: np.random.Generator, quality_range: tuple[int, int]) -> int:
    return int(rng.integers(quality_range[0], quality_range[1] + 1))


def _as_batch(hr: torch.Tensor, scale: int) -> torch.Tensor:
    if hr.dim() not in (3, 4) or hr.shape[-3] != 3:
        raise ValueError(f"expected an RGB image (3, H, W) or batch (B, 3, H, W), got {tuple(hr.shape)}")
    if hr.shape[-1] < scale or hr.shape[-2] < scale:
        raise ValueError(f"image {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
    return hr.detach().to(torch.float32).reshape(-1, *hr.shape[-3:])  # (B, 3, H, W)


# ----------------------------------------------------------------------------- pipelines


def _degrade_one(x: torch.Tensor, rng: np.random.Generator, cfg: DegradationConfig, scale: int) -> torch.Tensor:
    """x: (1, 3, H, W) -> (1, 3, H // scale, W // scale)."""
    H, W = x.shape[-2:]
    aa = cfg.antialias
    if cfg.clean_prob > 0 and rng.random() < cfg.clean_prob:
        lr = resize(x, (H // scale, W // scale), "bicubic", antialias=True)
        return (lr.clamp(0, 1) * 255).round() / 255

    # first order
    kernel = random_blur_kernel(rng, cfg.kernel_prob, cfg.blur_sigma, cfg.betag_range, cfg.betap_range,
                                cfg.sinc_prob, cfg.kernel_sizes)
    x = filter2d(x, kernel)
    s = _random_scale(rng, cfg.resize_prob, cfg.resize_range)
    x = resize(x, (int(H * s), int(W * s)), _random_mode(rng), aa)
    x = _random_noise(x, rng, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range,
                      cfg.gray_noise_prob)
    x = jpeg(x, _random_quality(rng, cfg.jpeg_range))

    # second order: its resize is relative to the final LR size, not to the current one
    if rng.uniform() < cfg.second_blur_prob:
        kernel2 = random_blur_kernel(rng, cfg.kernel_prob2, cfg.blur_sigma2, cfg.betag_range2,
                                     cfg.betap_range2, cfg.sinc_prob2, cfg.kernel_sizes)
        x = filter2d(x, kernel2)
    s = _random_scale(rng, cfg.resize_prob2, cfg.resize_range2)
    x = resize(x, (int(H / scale * s), int(W / scale * s)), _random_mode(rng), aa)
    x = _random_noise(x, rng, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                      cfg.gray_noise_prob2)

    # [resize to LR + final sinc] and JPEG in random order; Real-ESRGAN reports that other orders
    # (sinc between JPEG and resize) give twisted lines.
    lr_size = (H // scale, W // scale)
    sinc = random_final_sinc(rng, cfg.final_sinc_prob, cfg.kernel_sizes)
    mode = _random_mode(rng)
    quality = _random_quality(rng, cfg.jpeg_range2)
    jpeg_first = rng.uniform() >= 0.5
    if jpeg_first:
        x = jpeg(x, quality)
    x = resize(x, lr_size, mode, aa)
    if sinc is not None:
        x = filter2d(x, sinc)
    if not jpeg_first:
        x = jpeg(x, quality)

    # the LR a model sees at test time is an 8-bit image
    return (x * 255.0).round().clamp(0, 255) / 255.0


def degrade(hr: torch.Tensor, rng: np.random.Generator | int,
            cfg: DegradationConfig = DegradationConfig(), scale: int = 4) -> torch.Tensor:
    """Real-ESRGAN second-order degradation of an HR image.

    hr: (3, H, W) or (B, 3, H, W) float in [0, 1]. rng: a numpy Generator (advanced in place) or an
    int seed. A batch draws independent degradations per sample, in order, from the one generator.
    Returns float32 (3, H // scale, W // scale) (or with the batch dim), in [0, 1], 8-bit valued.
    The same seed gives a bit-identical result.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = _as_batch(hr, scale)
    out = torch.cat([_degrade_one(x[i:i + 1], rng, cfg, scale) for i in range(x.shape[0])])
    return out if hr.dim() == 4 else out[0]


EVAL_BLUR_SIGMA = 1.2  # HR pixels
EVAL_BLUR_SIZE = 11
EVAL_NOISE_SIGMA = 5.0  # on the 0-255 scale
EVAL_JPEG_QUALITY = 70


def degrade_eval(hr: torch.Tensor, seed: int, scale: int = 4) -> torch.Tensor:
    """Fixed, mild, realistic single-order degradation for evaluation (the benchmark's realistic track).

    1. isotropic Gaussian blur, sigma 1.2 HR px, 11x11, reflect padding;
    2. bicubic downscale by `scale` with antialiasing (a camera-like low-pass, not aliased);
    3. colour Gaussian noise, sigma 5/255, drawn from numpy default_rng(seed), clamp to [0, 1];
    4. JPEG at quality 70 (Pillow, 4:2:0), which also rounds to 8 bits.
    Only the noise depends on seed. hr: (3, H, W) or (B, 3, H, W) in [0, 1]; returns float32
    (3, H // scale, W // scale) (or batched). Bit-identical for the same seed, torch and Pillow.
    """
    rng = np.random.default_rng(seed)
    x = _as_batch(hr, scale)
    x = filter2d(x, gaussian_kernel(EVAL_BLUR_SIZE, EVAL_BLUR_SIGMA))
    x = resize(x, (x.shape[-2] // scale, x.shape[-1] // scale), "bicubic", antialias=True)
    x = (x + gaussian_noise(x, rng, EVAL_NOISE_SIGMA, gray=False)).clamp(0, 1)
    x = jpeg(x, EVAL_JPEG_QUALITY)
    return x if hr.dim() == 4 else x[0]


@dataclass(frozen=True)
class PhotoDegradation:
    """A mild single-order degradation matched to the photos people upscale (phone and web JPEGs), for the
    faithful restorer (models/restorer.py). The published second-order pipeline above is far heavier than that:
    a net trained on half of it comes out soft on clean and mildly compressed photos (MODEL_CARD.md).

    With probability clean_prob the LR is the clean bicubic downscale (8-bit). Otherwise, each step with its
    probability: Gaussian blur (sigma in HR px) -> a first downscale by a factor in two_stage_range (random
    mode) -> the downscale to the LR size (random mode, antialiased) -> Gaussian noise (0-255 scale, grey with
    gray_noise_prob) -> JPEG (4:2:0) at a quality in jpeg_range -> 8 bits. The eval's realistic track (blur 1.2,
    noise 5, JPEG 70) lies inside these ranges, not at their centre."""
    clean_prob: float = 0.5
    blur_prob: float = 0.7
    blur_sigma: tuple[float, float] = (0.3, 2.0)
    two_stage_prob: float = 0.3
    two_stage_range: tuple[float, float] = (1.2, 2.5)
    noise_prob: float = 0.6
    noise_range: tuple[float, float] = (1.0, 10.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.8
    jpeg_range: tuple[int, int] = (40, 95)


def degrade_photo(hr: torch.Tensor, rng: np.random.Generator | int, cfg: PhotoDegradation = PhotoDegradation(),
                  scale: int = 4) -> torch.Tensor:
    """hr (3, H, W) or (B, 3, H, W) in [0, 1] -> LR (.., H // scale, W // scale), 8-bit valued; per-sample
    draws from one numpy Generator (a seed fixes the output)."""
    return degrade_photo_flagged(hr, rng, cfg, scale)[0]


def degrade_photo_flagged(hr: torch.Tensor, rng: np.random.Generator | int,
                          cfg: PhotoDegradation = PhotoDegradation(), scale: int = 4
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """degrade_photo's LR and, per sample, whether it took the degraded branch (bool (B,), or () for one image):
    what a loss meant for degraded inputs only needs (train/restorer.py `flat_degraded_only`). The same draws as
    degrade_photo."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = _as_batch(hr, scale)
    out, degraded = [], []
    for i in range(x.shape[0]):
        y = x[i:i + 1]
        H, W = y.shape[-2:]
        lr_size = (H // scale, W // scale)
        degraded.append(not rng.random() < cfg.clean_prob)
        if not degraded[-1]:
            y = resize(y, lr_size, "bicubic", antialias=True)
        else:
            if rng.random() < cfg.blur_prob:
                sigma = float(rng.uniform(*cfg.blur_sigma))
                size = 2 * math.ceil(3 * sigma) + 1
                y = filter2d(y, gaussian_kernel(size, sigma))
            if rng.random() < cfg.two_stage_prob:
                s = float(rng.uniform(*cfg.two_stage_range))
                y = resize(y, (round(H / s), round(W / s)), _random_mode(rng), antialias=True)
            y = resize(y, lr_size, _random_mode(rng), antialias=True)
            if rng.random() < cfg.noise_prob:
                gray = rng.random() < cfg.gray_noise_prob
                y = (y + gaussian_noise(y, rng, float(rng.uniform(*cfg.noise_range)), gray)).clamp(0, 1)
            if rng.random() < cfg.jpeg_prob:
                y = jpeg(y, _random_quality(rng, cfg.jpeg_range))
        out.append((y.clamp(0, 1) * 255.0).round() / 255.0)
    lr, flags = torch.cat(out), torch.tensor(degraded)
    return (lr, flags) if hr.dim() == 4 else (lr[0], flags[0])
