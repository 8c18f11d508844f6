"""Convolutional stems and heads: the local inductive bias the `small` preset adds around the ViT.

The paper's tokenizer is a plain ViT (patchify with a p x p linear map). Trained briefly on a CPU, a plain ViT
grouped-VQ tokenizer converges slowly and blurs (it must learn every local filter from scratch). A few residual
conv blocks per resolution before the patch embedding and after the unpatchify give it the translation-invariant
local filters for free; with empty `widths` these modules reduce to the paper's linear patchify/unpatchify.
`TokenUpsampler` is the strided generator's conv way back from Transformer tokens to the token grid."""
import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvDown(nn.Module):
    """(B, in_ch, H, W) -> (B, out_dim, H/factor, W/factor), factor = 2 ** (len(widths) - 1).

    widths[i] / blocks[i]: channels / residual blocks at resolution 1/2**i. Compute at full resolution is what a
    CPU pays for, so presets keep the first widths narrow. Empty widths: the paper's linear patch embedding."""

    def __init__(self, in_ch: int, out_dim: int, factor: int, widths: tuple[int, ...] = (),
                 blocks: tuple[int, ...] = ()):
        super().__init__()
        if not widths:
            self.net = nn.Conv2d(in_ch, out_dim, factor, stride=factor)
            return
        _check(factor, widths, blocks)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, widths[0], 3, padding=1)]
        for i, (w, b) in enumerate(zip(widths, blocks)):
            layers += [ResBlock(w) for _ in range(b)]
            if i + 1 < len(widths):
                layers.append(nn.Conv2d(w, widths[i + 1], 2, stride=2))
        layers += [nn.SiLU(), nn.Conv2d(widths[-1], out_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvUp(nn.Module):
    """(B, in_dim, h, w) -> (B, out_ch, h*factor, w*factor): the mirror of ConvDown, pixel-shuffle upsampling.

    widths[i] / blocks[i] as in ConvDown (index 0 = full output resolution)."""

    def __init__(self, in_dim: int, out_ch: int, factor: int, widths: tuple[int, ...] = (),
                 blocks: tuple[int, ...] = ()):
        super().__init__()
        if not widths:  # paper: linear unpatchify (each token -> its factor x factor patch)
            self.net = nn.Sequential(nn.Conv2d(in_dim, out_ch * factor * factor, 1), nn.PixelShuffle(factor))
            return
        _check(factor, widths, blocks)
        layers: list[nn.Module] = [nn.Conv2d(in_dim, widths[-1], 1)]
        for i in reversed(range(len(widths))):
            layers += [ResBlock(widths[i]) for _ in range(blocks[i])]
            if i > 0:
                layers += [nn.Conv2d(widths[i], widths[i - 1] * 4, 3, padding=1), nn.PixelShuffle(2)]
        layers += [nn.SiLU(), nn.Conv2d(widths[0], out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check(factor: int, widths: tuple[int, ...], blocks: tuple[int, ...]) -> None:
    if 2 ** (len(widths) - 1) != factor or len(blocks) != len(widths):
        raise ValueError(f"need log2({factor}) + 1 conv widths and as many block counts, got {widths} / {blocks}")


class TokenUpsampler(ConvUp):
    """The strided generator's way back to the token grid: tokens (B, h*w, in_dim) on an h x w grid ->
    (B, h*s*w*s, out_ch) on the (h*s) x (w*s) grid, s = `factor`. A ConvUp (same tensor names) between two
    reshapes, so the Transformer can run on s x s cells of the grid (s^2 fewer tokens) before the heads."""

    def forward(self, tokens: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """-> (tokens on the finer grid, its (h, w))."""
        B, _, D = tokens.shape
        grid = super().forward(tokens.transpose(1, 2).reshape(B, D, *hw))  # (B, out_ch, h*s, w*s)
        return grid.flatten(2).transpose(1, 2), tuple(grid.shape[-2:])  # (B, h*s*w*s, out_ch)
