"""REPA: representation alignment loss (Yu et al. 2024, "Representation Alignment for Generation",
arXiv:2410.06940, Sec. 3), as HiTokSR Sec. 3.2 uses it on the VFM itself.

HiTokSR fine-tunes the VFM with LoRA on degraded inputs and aligns "VFM features of the
low-quality input and those of the ground-truth image". Here:

    L_REPA = - mean_{b, h, w}  cos( h_phi(F_lora(LQ))[b, :, h, w],  F_frozen(GT)[b, :, h, w] )

F_lora = the LoRA-adapted VFM patch map of the LQ image (gradients flow to LoRA and h_phi);
F_frozen = the same backbone with LoRA off on the GT image (``VFM.forward_frozen``), a fixed target;
h_phi = a small per-location MLP (Linear-SiLU-Linear-SiLU-Linear, the 3-layer SiLU projector REPA
uses), applied as 1x1 convolutions. The loss lies in [-1, 1]; -1 = perfectly aligned.

Spatial alignment: an LQ image and its GT rarely give the same patch grid (the GT is 4x larger
unless the LQ is upsampled first), so the target map is resized to the source grid -- area
averaging when shrinking (each target cell summarises the GT patches it covers), bilinear when
growing. Resizing the detached target, not the source, keeps the loss at the grid the generator
consumes and costs no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class REPALoss(nn.Module):
    """forward(source (B, D_in, h, w), target (B, D_t, H, W)) -> scalar loss, -mean cosine similarity."""

    def __init__(self, in_dim: int, target_dim: int | None = None, hidden_dim: int | None = None) -> None:
        super().__init__()
        target_dim = in_dim if target_dim is None else target_dim
        hidden_dim = max(in_dim, target_dim) if hidden_dim is None else hidden_dim
        self.proj = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1),
            nn.SiLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 1),
            nn.SiLU(),
            nn.Conv2d(hidden_dim, target_dim, 1),
        )

    @staticmethod
    def align(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize a target map (B, D, H, W) to `size` (area when shrinking both sides, else bilinear)."""
        if tuple(target.shape[-2:]) == tuple(size):
            return target
        if target.shape[-2] >= size[0] and target.shape[-1] >= size[1]:
            return F.interpolate(target, size=size, mode="area")
        return F.interpolate(target, size=size, mode="bilinear", align_corners=False)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if source.shape[0] != target.shape[0]:
            raise ValueError(f"REPA: batch sizes differ ({source.shape[0]} vs {target.shape[0]})")
        pred = self.proj(source)  # (B, D_t, h, w)
        tgt = self.align(target.detach(), pred.shape[-2:])  # (B, D_t, h, w), fixed target
        return -F.cosine_similarity(pred, tgt, dim=1).mean()  # cos over channels: (B, h, w) -> scalar
