"""LR guidance for the tokenizer's decoder, with a fidelity knob (not in the paper; issue 11).

The paper's decoder sees only tokens, so everything the generator gets wrong shows, and a briefly trained
tokenizer caps the result below bicubic. Here the decoder also sees the LR input, weighted by the fidelity
w in [0, 1] (CodeFormer's idea of a controllable fusion of degraded-input features into a VQ decoder, Zhou et
al. 2022; here in the pixel domain, which a CPU-trained model learns far faster — see below):

    sr_w = sr + w * r,                r = head([F_lr, F_tok])        (detail the LR predicts, x patch)
    out  = sr_w + w * up4(a - down4(sr_w)),   a = lr + correct(F_lr)  (one back-projection step)

F_lr: a small residual CNN on the LR image at the token grid; F_tok: the decoder trunk's token features, so
the residual knows what the tokens already drew. The back-projection (Irani & Peleg 1991; models/colorfix.py
does the same as a post-process) makes the output's LR band the input's at w = 1, against a learned
correction of the input (noise and JPEG blocks of a degraded photo need not be handed back), so the tokens
and r only carry what the LR lacks. w = 0 is the paper's token-only decoder, bit for bit (the guide is
skipped). Training draws w per sample, so one model serves every w. The head's and the correction's last
layers start at zero: a fresh guide is exactly "tokens + back-projection".

Measured (2-core CPU, same shipped tokens, clean bicubic LR of train crops): CodeFormer-style feature
modulation of the trunk output (F' = F + w(alpha F + beta)) left PSNR unchanged after 200 steps; the pixel
path is what the floor CNN of the issue does, and learns at its speed.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .convblocks import ResBlock


class LRGuide(nn.Module):
    """lr (B, 3, H/4, W/4) in [0, 1] + token features (B, dim, h, w) + the token-only image -> the guided image.

    `lr_per_token` LR pixels make one token side (tokenizer patch / 4); a strided conv brings the LR grid to
    the token grid when it is > 1."""

    def __init__(self, dim: int, width: int, blocks: int, lr_per_token: int):
        super().__init__()
        k = lr_per_token
        stem = nn.Conv2d(3, width, 3, padding=1) if k == 1 else nn.Conv2d(3, width, k, stride=k)
        self.encode = nn.Sequential(stem, *[ResBlock(width) for _ in range(blocks)], nn.SiLU())
        self.head = nn.Sequential(nn.Conv2d(width + dim, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, 3 * 16 * k * k, 3, padding=1), nn.PixelShuffle(4 * k))
        # the anchor's correction, at the LR grid: 3 values per LR pixel of a token (pixel-shuffled)
        self.correct = nn.Sequential(nn.Conv2d(width, 3 * k * k, 3, padding=1), nn.PixelShuffle(k))
        for layer in (self.head[-2], self.correct[0]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.blocks = blocks

    @property
    def reach(self) -> int:
        """Tokens (one side) an LR pixel can move the output by before the back-projection: stem, 2 convs per
        block, the head's two 3x3 convs."""
        return 1 + 2 * self.blocks + 2

    def forward(self, sr: torch.Tensor, feats: torch.Tensor, lr: torch.Tensor,
                fidelity: torch.Tensor | float) -> torch.Tensor:
        """sr (B, 3, H, W): the token-only decoder's image; feats: its trunk features at the token grid.
        fidelity: a float, or a (B,) tensor (one w per sample, as in training)."""
        g = self.encode(lr * 2 - 1)
        if g.shape[-2:] != feats.shape[-2:]:
            raise ValueError(f"LR grid {tuple(g.shape[-2:])} does not match the token grid {tuple(feats.shape[-2:])}")
        w = fidelity.view(-1, 1, 1, 1).to(sr.dtype) if torch.is_tensor(fidelity) else fidelity
        sr = sr + w * self.head(torch.cat([g, feats.to(g.dtype)], dim=1)).to(sr.dtype)
        anchor = lr + self.correct(g)
        # back-projection in fp32 (bicubic antialiasing wants it)
        sr32 = sr.float()
        down = F.interpolate(sr32, size=anchor.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        delta = F.interpolate(anchor.float() - down, size=sr.shape[-2:], mode="bicubic", align_corners=False)
        w32 = w.float() if torch.is_tensor(w) else w
        return (sr32 + w32 * delta).to(sr.dtype)


def check_fidelity(w: float) -> float:
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {w}")
    return float(w)
