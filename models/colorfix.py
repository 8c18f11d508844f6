"""LR-consistent colour fix: take the output's coarse band (colour, shading) from the LR input.

A token model decodes whatever the codebooks hold; when the generator picks slightly wrong codes the
output drifts in colour and brightness over whole regions, the error PSNR punishes most and viewers
notice first. Diffusion and VQ upscalers answer this with a post-hoc colour fix (StableSR's wavelet /
AdaIN colour correction); this is the same idea in its local form, one step of back-projection
(Irani & Peleg 1991) restricted to the coarse band:

    sr' = sr + up4( G_sigma * (lr - down4(sr)) )

down4 is antialiased bicubic, up4 bicubic, G_sigma a Gaussian of ``sigma`` LR pixels. After it, the
output downscaled and blurred equals the LR input blurred; the band above that (edges, texture) stays
the model's. sigma > 0 keeps the LR's noise and JPEG blocks out (they sit in the band left alone);
sigma = 0 would be plain back-projection, which hands them back.

The reach is local (about 3 sigma + 2 LR pixels), so tiles can apply it independently. Not in the
paper: an inference-time option of the CLI (``--no-color-fix`` turns it off), measured in docs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# LR pixels: nearly all of plain back-projection's PSNR gain, while the blur still damps the LR's pixel-level
# noise and JPEG blocks that sigma 0 hands back (the sweep is in MODEL_CARD.md, "Design measurements").
SIGMA = 0.5


def _radius(sigma: float) -> int:
    """Half-width of the Gaussian kernel: 3 sigma, at least one pixel (0 for no blur)."""
    return max(1, int(3 * sigma + 0.5)) if sigma > 0 else 0


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with edge replication; sigma in pixels (0: identity)."""
    if sigma <= 0:
        return x
    r = _radius(sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def reach(sigma: float = SIGMA) -> int:
    """LR pixels (one side) over which an LR pixel can change the fix: the blur plus the bicubic taps."""
    return _radius(sigma) + 2


def color_fix(sr: torch.Tensor, lr: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """sr (B, 3, s*h, s*w), lr (B, 3, h, w), both in [0, 1] -> sr with its coarse band from lr, in [0, 1].

    Computed in fp32 whatever the inputs' dtype (it is cheap, and bicubic antialiasing wants fp32)."""
    scale = sr.shape[-1] // lr.shape[-1]
    if sr.shape[-2:] != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise ValueError(f"sr {tuple(sr.shape[-2:])} is not an integer multiple of lr {tuple(lr.shape[-2:])}")
    out_dtype = sr.dtype
    sr32, lr32 = sr.float(), lr.float()
    down = F.interpolate(sr32, size=lr.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    delta = gaussian_blur(lr32 - down, sigma)
    fixed = sr32 + F.interpolate(delta, size=sr.shape[-2:], mode="bicubic", align_corners=False)
    return fixed.clamp(0, 1).to(out_dtype)
