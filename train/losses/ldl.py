"""Locally discriminative learning (LDL; Liang, Zeng & Zhang, "Details or Artifacts", CVPR 2022): a pixel loss
that falls where a GAN-trained SR network draws artefacts rather than detail.

Artefacts show as pixels whose residual |photo - output| varies a lot within a small window, in a patch whose
residuals vary a lot overall; realistic texture leaves a residual that is large but even. So

    r       = sum over channels of |photo - output|                               (B, 1, H, W)
    map     = var(r over the patch) ** (1/5)  *  var(r over each 7 x 7 window)
    map     = 0 where the EMA model's residual is larger than the current one's   (a pixel the current network
                                                                                  does better than its own
                                                                                  average is not an artefact)
    loss    = mean |map * (output - photo)|

The map is a weight, not a target: it carries no gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _local_variance(x: torch.Tensor, window: int) -> torch.Tensor:
    """Variance over each window x window neighbourhood (reflect padding), same size as x."""
    pad = window // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    return (F.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp_min(0)


@torch.no_grad()
def artefact_map(output: torch.Tensor, ema_output: torch.Tensor, photo: torch.Tensor,
                 window: int = 7) -> torch.Tensor:
    """(B, 1, H, W) weights: large on pixels that look like artefacts of `output` and that its EMA avoids."""
    residual = (photo - output).abs().sum(1, keepdim=True)
    ema_residual = (photo - ema_output).abs().sum(1, keepdim=True)
    patch = residual.var(dim=(1, 2, 3), keepdim=True) ** 0.2
    weight = patch * _local_variance(residual, window)
    return weight.masked_fill(residual < ema_residual, 0.0)


def ldl_loss(output: torch.Tensor, ema_output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """LDL's artefact-weighted L1 between output and photo (ema_output: the EMA network's image of the same LR)."""
    weight = artefact_map(output.detach(), ema_output, photo)
    return (weight * (output - photo)).abs().mean()
