"""A loss on the regular pattern a pixel-shuffle upsampler draws when a GAN pushes its sub-pixel phases apart.

Measured on the restorer (models/restorer.py: two x2 pixel shuffles) under a GAN (MODEL_CARD.md): within 300
steps the live weights draw stripes or a checkerboard of period 2 px (the last shuffle's grid), with or without
LDL and a shifted discriminator input; a loss on grid-aligned Haar coefficients moved it to period 4 px at an
offset that loss cannot see. So this one is blind to phase: the magnitude of the Fourier transform of 16 x 16 px
tiles, at the frequencies of a 2 px and 4 px grid (every (u, v) in {0, 4, 8, 12}^2 but DC), where the output may
have no more than the photo has:

    loss = mean over tiles and channels of  max over those 15 frequencies of relu(|F output| - |F photo|) / 16

A pattern with period 2 or 4 px puts its energy on one or two of those frequencies whatever its offset, where
texture of the same amplitude spreads it over all 256 (the max of 15 of them is ~10x smaller); the photo's own
regular detail is allowed for."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TILE = 16


def _grid_frequencies(tile: int) -> torch.Tensor:
    step = tile // 4
    mask = torch.zeros(tile, tile, dtype=torch.bool)
    mask[::step, ::step] = True
    mask[0, 0] = False
    return mask


def _tile_spectrum(x: torch.Tensor, tile: int) -> torch.Tensor:
    """|FFT| of the mean-removed tile x tile tiles of each channel: (B, C, tiles, tile, tile)."""
    b, c, h, w = x.shape
    tiles = F.unfold(x.reshape(b * c, 1, h, w), tile, stride=tile)  # (B*C, tile*tile, L)
    tiles = tiles.transpose(1, 2).reshape(b, c, -1, tile, tile)
    return torch.fft.fft2(tiles - tiles.mean(dim=(-2, -1), keepdim=True)).abs()


def grid_loss(output: torch.Tensor, photo: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """The output's spectral excess over the photo's at the 2 px / 4 px grid frequencies (module docstring)."""
    mask = _grid_frequencies(tile).to(output.device)
    excess = _tile_spectrum(output.float(), tile)[..., mask] - _tile_spectrum(photo.float(), tile)[..., mask]
    return F.relu(excess).amax(dim=-1).mean() / tile
