"""Convolutional stems and heads: the local inductive bias the `small` preset adds around the ViT.

The paper's tokenizer is a plain ViT (patchify with a p x p linear map). Trained briefly on a CPU, a plain ViT
grouped-VQ tokenizer converges slowly and blurs (it must learn every local filter from scratch). A few residual
conv blocks per resolution before the patch embedding and after the unpatchify give it the translation-invariant
local filters for free; with `conv_dim=0` these modules reduce to the paper's linear patchify/unpatchify."""
import math

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
    """(B, in_ch, H, W) -> (B, out_dim, H/factor, W/factor); factor a power of two (or 1)."""

    def __init__(self, in_ch: int, out_dim: int, factor: int, conv_dim: int, blocks_per_scale: int = 1):
        super().__init__()
        if conv_dim == 0:  # paper: ViT patch embedding, a linear map of each factor x factor patch
            self.net = nn.Conv2d(in_ch, out_dim, factor, stride=factor)
            return
        n_down = int(math.log2(factor))
        assert 2 ** n_down == factor, "patch factor must be a power of two"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, conv_dim, 3, padding=1)]
        for _ in range(n_down):
            layers += [ResBlock(conv_dim) for _ in range(blocks_per_scale)]
            layers.append(nn.Conv2d(conv_dim, conv_dim, 2, stride=2))
        layers += [ResBlock(conv_dim) for _ in range(blocks_per_scale)]
        layers += [nn.SiLU(), nn.Conv2d(conv_dim, out_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvUp(nn.Module):
    """(B, in_dim, h, w) -> (B, out_ch, h*factor, w*factor) with pixel-shuffle upsampling."""

    def __init__(self, in_dim: int, out_ch: int, factor: int, conv_dim: int, blocks_per_scale: int = 1):
        super().__init__()
        if conv_dim == 0:  # paper: linear unpatchify (each token -> its factor x factor patch)
            self.net = nn.Sequential(nn.Conv2d(in_dim, out_ch * factor * factor, 1), nn.PixelShuffle(factor))
            return
        n_up = int(math.log2(factor))
        assert 2 ** n_up == factor, "patch factor must be a power of two"
        layers: list[nn.Module] = [nn.Conv2d(in_dim, conv_dim, 1)]
        layers += [ResBlock(conv_dim) for _ in range(blocks_per_scale)]
        for _ in range(n_up):
            layers += [nn.Conv2d(conv_dim, conv_dim * 4, 3, padding=1), nn.PixelShuffle(2)]
            layers += [ResBlock(conv_dim) for _ in range(blocks_per_scale)]
        layers += [nn.SiLU(), nn.Conv2d(conv_dim, out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
