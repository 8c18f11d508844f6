"""A loss on detail drawn where the photo is flat: bench/artefacts.py's flat-noise check as a training loss.

A texture restorer fed noise (models/restorer.py `body_noise`) learns to shape it into texture where the picture
has texture; the statistics loss that teaches it (train/losses/texture_stats.py) compares 16 px patches, so a
faint mottle on a flat patch costs it little, and on compressed LR the net cannot tell JPEG noise from texture:
measured, the shipped texture restorer keeps a mottle on flat areas of compressed photos (cups, dark ground)
that holds its detail setting at 0.7 (MODEL_CARD.md, "Noise inputs"). Where the *photo* is flat the target is
not ambiguous — there is no texture to invent — so this is a deterministic signal: over the 16 px windows whose
detail RMS (luma minus its Gaussian blur, sigma 3 px) in the photo is at most `level` (1 grey level, as the
check), the mean of the output's detail RMS in excess of the photo's own (its sensor grain is allowed). Windows
with texture in the photo are left to the other losses. Measured on degraded training crops (192 px, 3 batches
of 8): the photos' own 0.55-0.66 grey levels there, the faithful restorer 0.14-0.33, the shipped texture
restorer 0.74-1.96."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

WINDOW = 16
SIGMA = 3.0
LEVEL = 1.0 / 255  # a window is flat where the photo's detail RMS is at most this (1 grey level)
_LUMA = (65.481 / 255, 128.553 / 255, 24.966 / 255)  # BT.601 Y of [0, 1] RGB, as the eval's PSNR-Y (offset dropped)


def _detail_ms(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H/window, W/window): mean square of luma minus its blur per window."""
    y = sum(w * x[:, c:c + 1] for c, w in enumerate(_LUMA))
    detail = y - gaussian_blur(y, kernel_size=[int(8 * SIGMA) | 1] * 2, sigma=[SIGMA, SIGMA])
    return F.avg_pool2d(detail.square(), window)


def flat_detail_loss(out: torch.Tensor, photo: torch.Tensor, level: float = LEVEL, window: int = WINDOW,
                     on: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Mean excess of `out`'s detail RMS over `photo`'s in the windows where `photo` is flat ([0, 1] luma
    units); 0 when no window is flat. `on`: (B,) bool, the crops it counts on (None: all)."""
    with torch.no_grad():
        photo_rms = (_detail_ms(photo.float(), window) + eps).sqrt()  # eps as below: the same image costs 0
        flat = (photo_rms <= level).float()
        if on is not None:
            flat = flat * on.view(-1, 1, 1, 1).to(flat.dtype)
    excess = F.relu((_detail_ms(out.float(), window) + eps).sqrt() - photo_rms)
    return (flat * excess).sum() / flat.sum().clamp_min(1.0)
