"""Noise tied to absolute output position: the random input of the restorer's grain branch at inference.

A deterministic network asked for texture the LR cannot predict (where each blade of grass or grain of sand
goes) draws the cheapest thing with the asked-for statistics: measured on the restorer, a pattern on its
pixel-shuffle grid (MODEL_CARD.md, "Texture statistics"). Given noise, it can shape it instead (StyleGAN's
per-pixel noise inputs; ESRGAN+, Rakotonirina & Rasoanaivo 2020, for super-resolution). Training draws fresh
noise each step; inference uses this hash of (channel, row, column) so that an image's output is the same on
every run and every tile of it sees the same noise where tiles overlap."""
from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """An integer hash (lowbias32, C. Wellons) on int64 tensors holding 32-bit values."""
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & _MASK
    v = v ^ (v >> 15)
    v = (v * 0x846CA68B) & _MASK
    return v ^ (v >> 16)


def position_noise(channels: int, height: int, width: int, top: int = 0, left: int = 0,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, channels, height, width) noise of zero mean and unit variance (uniform) whose value at output pixel
    (top + y, left + x) of channel c depends on (c, top + y, left + x) only."""
    c = torch.arange(channels, device=device, dtype=torch.int64).view(-1, 1, 1)
    y = torch.arange(top, top + height, device=device, dtype=torch.int64).view(1, -1, 1)
    x = torch.arange(left, left + width, device=device, dtype=torch.int64).view(1, 1, -1)
    v = _hash32((x & _MASK) ^ _hash32(((y & _MASK) ^ _hash32(c + 0x9E3779B9)) & _MASK))
    uniform = (v >> 8).to(torch.float64) / float(1 << 24)  # 24 random bits -> [0, 1)
    return ((uniform - 0.5) * 12 ** 0.5).to(dtype)[None]
