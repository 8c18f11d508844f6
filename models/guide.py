"""LR guidance for the tokenizer's decoder, with a fidelity knob (not in the paper; issue 11).

The paper's decoder sees only tokens, so everything the generator gets wrong shows, and a briefly trained
tokenizer caps the result below bicubic. Here the decoder may also see the LR input, in two places, both
weighted by the fidelity w in [0, 1]:

1. Features (CodeFormer's controllable feature transformation, Zhou et al. 2022, Sec. 3.3): a small residual
   CNN encodes the LR input at the token grid, and after the decoder's Transformer trunk the token features F
   are modulated  F' = F + w * (alpha * F + beta),  (alpha, beta) = fuse([F_lr, F]).
2. Pixels (one back-projection step, Irani & Peleg 1991, as in models/colorfix.py but inside the model):
   sr' = sr + w * up4(a - down4(sr)), with a = lr + a learned correction from F_lr (so noise and JPEG blocks
   of a degraded input need not be handed back). At w = 1 the output's LR band is the input's; the features
   of (1) only have to add what the LR lacks. Measured: without (2), 200 CPU steps did not move PSNR at all.

w = 0 is the paper's token-only decoder, bit for bit (the guide is skipped). Training draws w per sample, so
one model serves every w (CodeFormer does the same). The fuse and correction layers start at zero.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .convblocks import ResBlock


class LRGuide(nn.Module):
    """lr (B, 3, H/4, W/4) in [0, 1] and token features (B, dim, h, w) -> modulated features, same shape.

    `lr_per_token` LR pixels make one token side (tokenizer patch / 4); a strided conv brings the LR grid to
    the token grid when it is > 1."""

    def __init__(self, dim: int, width: int, blocks: int, lr_per_token: int):
        super().__init__()
        k = lr_per_token
        stem = nn.Conv2d(3, width, 3, padding=1) if k == 1 else nn.Conv2d(3, width, k, stride=k)
        self.encode = nn.Sequential(stem, *[ResBlock(width) for _ in range(blocks)], nn.SiLU())
        self.fuse = nn.Sequential(nn.Conv2d(dim + width, dim, 3, padding=1), nn.SiLU(), nn.Conv2d(dim, 2 * dim, 1))
        # the anchor's correction, at the LR grid: one 3x3 conv per LR pixel of a token (pixel-shuffled)
        self.correct = nn.Sequential(nn.Conv2d(width, 3 * k * k, 3, padding=1), nn.PixelShuffle(k))
        for layer in (self.fuse[-1], self.correct[0]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.blocks = blocks

    @property
    def reach(self) -> int:
        """Tokens (one side) an input pixel can move the fused features by: stem + 2 convs per block + fuse."""
        return 1 + 2 * self.blocks + 1

    @staticmethod
    def _weight(fidelity: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
        return fidelity.view(-1, 1, 1, 1).to(like.dtype) if torch.is_tensor(fidelity) else fidelity

    def forward(self, feats: torch.Tensor, lr: torch.Tensor, fidelity: torch.Tensor | float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (modulated features, the back-projection anchor (B, 3, H/4, W/4)). fidelity: a float, or (B,)."""
        g = self.encode(lr * 2 - 1)
        if g.shape[-2:] != feats.shape[-2:]:
            raise ValueError(f"LR grid {tuple(g.shape[-2:])} does not match the token grid {tuple(feats.shape[-2:])}")
        alpha, beta = self.fuse(torch.cat([feats, g.to(feats.dtype)], dim=1)).chunk(2, dim=1)
        w = self._weight(fidelity, feats)
        return feats + w * (alpha * feats + beta), lr + self.correct(g)

    def back_project(self, sr: torch.Tensor, anchor: torch.Tensor, fidelity: torch.Tensor | float) -> torch.Tensor:
        """sr + w * up4(anchor - down4(sr)); computed in fp32 (bicubic antialiasing wants it)."""
        sr32 = sr.float()
        down = F.interpolate(sr32, size=anchor.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        delta = F.interpolate(anchor.float() - down, size=sr.shape[-2:], mode="bicubic", align_corners=False)
        return (sr32 + self._weight(fidelity, sr32) * delta).to(sr.dtype)


def check_fidelity(w: float) -> float:
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {w}")
    return float(w)

