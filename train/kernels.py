"""Blur kernels of the Real-ESRGAN degradation model (Wang et al., ICCV-W 2021, Sec. 3.2 "Blur").

Real-ESRGAN blurs with one of six random 2-D kernels: isotropic / anisotropic Gaussian, generalized
Gaussian, plateau (each iso or aniso), or, with a small probability, a circular 2-D sinc (ideal
low-pass) that mimics ringing and overshoot. HiTokSR (Sec. 4.1) adopts that degradation pipeline.
The formulas and sampling rules follow the paper and the published x4plus training recipe
(xinntao/Real-ESRGAN options/train_realesrnet_x4plus.yml, realesrgan/data/realesrgan_dataset.py);
the code is our own.

All kernels are (k, k) float32 tensors, k odd, centred, normalised to sum 1. Random draws come from
one numpy Generator so that a seed fixes every kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# The order matches Real-ESRGAN's kernel_list, so kernel_probs read the same as its config.
KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)

# Real-ESRGAN draws the kernel size uniformly from the odd sizes 7..21.
KERNEL_SIZES = tuple(range(7, 22, 2))


def _quadratic_form(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """x^T Sigma^-1 x on a centred integer grid, Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {kernel_size}")
    r = kernel_size // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # (k, k) each
    # Rotating the grid by -theta and using the axis-aligned inverse is the same quadratic form as
    # inverting the rotated covariance, without a matrix inverse.
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalise(kernel: torch.Tensor) -> torch.Tensor:
    return (kernel / kernel.sum()).to(torch.float32)


def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float | None = None,
                    theta: float = 0.0) -> torch.Tensor:
    """Bivariate Gaussian exp(-q/2); isotropic when sigma_y is None."""
    q = _quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(torch.exp(-0.5 * q))


def generalized_gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float | None = None,
                                theta: float = 0.0, beta: float = 1.0) -> torch.Tensor:
    """Generalized Gaussian exp(-q^beta / 2): beta < 1 heavier tails, beta > 1 flatter top; 1 = Gaussian."""
    q = _quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(torch.exp(-0.5 * q.pow(beta)))


def plateau_kernel(kernel_size: int, sigma_x: float, sigma_y: float | None = None,
                   theta: float = 0.0, beta: float = 1.0) -> torch.Tensor:
    """Plateau-shaped kernel 1 / (1 + q^beta)."""
    q = _quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(1.0 / (1.0 + q.pow(beta)))


def sinc_kernel(kernel_size: int, omega_c: float) -> torch.Tensor:
    """Circularly symmetric ideal low-pass filter with cutoff omega_c (radians, pi = Nyquist).

    h(r) = omega_c * J1(omega_c * r) / (2 pi r), and its limit omega_c^2 / (4 pi) at r = 0.
    It has negative lobes, which is the point: it produces ringing and overshoot artifacts.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {kernel_size}")
    r_max = kernel_size // 2
    ax = torch.arange(-r_max, r_max + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # (k, k) each
    r = torch.sqrt(xx**2 + yy**2)
    r_safe = torch.where(r == 0, torch.ones_like(r), r)  # avoids 0/0; the centre is overwritten below
    kernel = omega_c * torch.special.bessel_j1(omega_c * r_safe) / (2 * math.pi * r_safe)
    kernel[r_max, r_max] = omega_c**2 / (4 * math.pi)
    return _normalise(kernel)


def _draw_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    """Real-ESRGAN's shape rule: half the draws below 1, half above (range assumed to straddle 1).

    With the plateau range [1, 2] the lower half collapses to beta = 1 exactly, as in the original.
    """
    lo, hi = beta_range
    if rng.uniform() < 0.5:
        return float(rng.uniform(lo, 1.0)) if lo < 1.0 else float(lo)
    return float(rng.uniform(max(lo, 1.0), hi))


def random_sinc_kernel(rng: np.random.Generator, kernel_size: int,
                       omega_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Sinc kernel with a random cutoff.

    Default cutoff range is Real-ESRGAN's size rule for in-order sinc blur: small kernels (< 13)
    cannot represent a low cutoff, so they draw omega_c from [pi/3, pi], larger ones from [pi/5, pi].
    """
    if omega_range is None:
        omega_range = (math.pi / 3, math.pi) if kernel_size < 13 else (math.pi / 5, math.pi)
    return sinc_kernel(kernel_size, float(rng.uniform(*omega_range)))


def random_blur_kernel(
    rng: np.random.Generator,
    kernel_probs: Sequence[float],
    sigma_range: tuple[float, float],
    betag_range: tuple[float, float],
    betap_range: tuple[float, float],
    sinc_prob: float,
    kernel_sizes: Sequence[int] = KERNEL_SIZES,
) -> torch.Tensor:
    """One blur kernel of a Real-ESRGAN degradation order.

    kernel_probs weighs KERNEL_TYPES. Anisotropic kernels draw sigma_x and sigma_y independently from
    sigma_range and a rotation from [-pi, pi]. Returned at its drawn size (7..21); Real-ESRGAN zero-pads
    to 21 only to batch kernels, which changes nothing in a reflect-padded convolution.
    """
    kernel_size = int(rng.choice(kernel_sizes))
    if rng.uniform() < sinc_prob:
        return random_sinc_kernel(rng, kernel_size)

    probs = np.asarray(kernel_probs, dtype=np.float64)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=probs / probs.sum()))]
    sigma_x = float(rng.uniform(*sigma_range))
    if kind.endswith("aniso"):
        sigma_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, theta = sigma_x, 0.0

    if kind in ("iso", "aniso"):
        return gaussian_kernel(kernel_size, sigma_x, sigma_y, theta)
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(kernel_size, sigma_x, sigma_y, theta, _draw_beta(rng, betag_range))
    return plateau_kernel(kernel_size, sigma_x, sigma_y, theta, _draw_beta(rng, betap_range))


def random_final_sinc(rng: np.random.Generator, prob: float,
                      kernel_sizes: Sequence[int] = KERNEL_SIZES) -> torch.Tensor | None:
    """The last sinc filter, applied at LR size; None means the identity (Real-ESRGAN's pulse kernel).

    Unlike in-order sinc blur, its cutoff is always drawn from [pi/3, pi].
    """
    if rng.uniform() >= prob:
        return None
    kernel_size = int(rng.choice(kernel_sizes))
    return random_sinc_kernel(rng, kernel_size, (math.pi / 3, math.pi))
