"""LR guidance for the tokenizer's decoder, with a fidelity knob (not in the paper).

The paper's decoder sees only tokens, so everything the generator gets wrong shows, and a briefly trained
tokenizer caps the result below bicubic. Here the decoder also sees the LR input:

    g      = head([F_lr, F_tok])                       detail the LR predicts, at the HR grid
    guided = bp(sr + g),   bp(x) = x + up4(a - down4(x)),   a = lr + correct(F_lr)
    out    = sr + fidelity * (guided - sr)             fidelity in [0, 1]

sr is the token-only decoder's image, F_tok its trunk's token features (so the head knows what the tokens
drew), F_lr a small residual CNN on the LR image at the token grid. bp is one back-projection step (Irani &
Peleg 1991; models/colorfix.py applies the same as a post-process): the guided image's LR band is the input's,
measured against a learned correction of the input so that noise and JPEG blocks of a degraded photo need not
be handed back; the tokens and the head only add what the LR lacks. fidelity 0 is the paper's token-only decoder,
bit for bit (the guide is skipped); fidelity 1 the guided image; between, a blend of the two images (as ESRGAN
interpolates a PSNR-oriented and a GAN-trained network), so one trained guide serves every fidelity. The head's and
the correction's last layers start at zero: a fresh guide is exactly "tokens + back-projection". Training the
guided image alone (fidelity 1) and blending is what learned; the designs that did not are in MODEL_CARD.md.
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
        fidelity: a float, or a (B,) tensor (one per sample, as in training)."""
        g = self.encode(lr * 2 - 1)
        if g.shape[-2:] != feats.shape[-2:]:
            raise ValueError(f"LR grid {tuple(g.shape[-2:])} does not match the token grid {tuple(feats.shape[-2:])}")
        guided = sr.float() + self.head(torch.cat([g, feats.to(g.dtype)], dim=1)).float()
        anchor = (lr + self.correct(g)).float()
        # back-projection in fp32 (bicubic antialiasing wants it)
        down = F.interpolate(guided, size=anchor.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        guided = guided + F.interpolate(anchor - down, size=sr.shape[-2:], mode="bicubic", align_corners=False)
        if not torch.is_tensor(fidelity) and fidelity == 1:
            return guided.to(sr.dtype)
        weight = fidelity.view(-1, 1, 1, 1).float() if torch.is_tensor(fidelity) else fidelity  # (B, 1, 1, 1) or float
        return (sr.float() + weight * (guided - sr.float())).to(sr.dtype)
