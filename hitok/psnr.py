"""PSNR, the one implementation: training logs it, the benchmarks report it (on Y, bench/metrics.py).

PSNR = 10 log10(peak^2 / MSE), infinite for identical images.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB between two images of one shape (arrays or tensors, any layout) on a 0..peak scale.

    Both are clipped to [0, peak] first: a model's raw output can overshoot, the image it becomes cannot."""
    a, b = (x.detach().double() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, np.float64))
            for x in (a, b))  # np.array copies: Pillow's arrays are read-only, which torch warns about
    a, b = a.clamp(0, peak), b.clamp(0, peak)
    mse = float((a - b.to(a.device)).pow(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)
