"""A loss on the regular pattern a pixel-shuffle upsampler draws when a GAN pushes its sub-pixel phases apart.

Measured on the restorer (models/restorer.py: two x2 pixel shuffles) under a GAN (MODEL_CARD.md): within 300 steps
the live weights draw a 2 px checkerboard / stripes -- the strongest isolated peak of the output's spectrum sits at
the Nyquist frequency, on the last shuffle's grid -- with or without LDL and a shifted discriminator input.

Such a pattern is the same on every 2 x 2 cell of the grid, so its Haar detail coefficients on that grid keep one
sign over a region; texture's change sign from cell to cell. Averaging the coefficients of (output - photo) over
`window` x `window` px therefore keeps a pattern at full strength and shrinks texture by ~window/2:

    d_k      = the LH, HL, HH Haar coefficients of (output - photo) on the 2^k px grid, k = 1, 2 (the two shuffles)
    loss     = sum_k mean |avg_pool(d_k, window / 2^k)|

The photo's own regular detail (fabric, blinds) is in the target, so only a pattern the photo lacks costs."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _haar_details(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (LH, HL, HH stacked on channels, LL), one Haar level on the 2 x 2 grid (H, W even)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    details = torch.cat([a + b - c - d, a - b + c - d, a - b - c + d], dim=1) / 4
    return details, (a + b + c + d) / 4


def grid_loss(output: torch.Tensor, photo: torch.Tensor, window: int = 16, levels: int = 2) -> torch.Tensor:
    """Mean |region average of the grid-aligned Haar details| of output - photo (module docstring)."""
    residual = output - photo
    total = output.new_zeros(())
    for k in range(1, levels + 1):
        details, residual = _haar_details(residual)
        pool = max(1, window >> k)
        total = total + F.avg_pool2d(details, pool, ceil_mode=True).abs().mean()
    return total
