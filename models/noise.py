"""Noise tied to picture position: what the restorer's noise inputs (models/restorer.py) get at inference.

A deterministic network asked for texture the LR cannot predict (where each blade of grass or grain of sand
goes) draws the cheapest thing with the asked-for statistics: measured on the restorer, a pattern on its
pixel-shuffle grid (MODEL_CARD.md, "Texture statistics"). Given noise, it can shape it instead (StyleGAN's
per-pixel noise inputs; ESRGAN+, Rakotonirina & Rasoanaivo 2020, for super-resolution). Training draws fresh
standard Gaussian noise each step (torch.randn); inference draws standard Gaussian noise from a hash of
(stream, channel, row, column) of the picture, so an image's output is the same on every run and every tile of
it sees the same noise where tiles overlap. `stream` keeps the LR-resolution body noise and the output-resolution
grain apart (otherwise LR pixel (y, x) and output pixel (y, x) would share values)."""
from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF


def _mul32(v: torch.Tensor, k: int) -> torch.Tensor:
    """v * k mod 2^32 for 32-bit v and k in int64 without overflow: the product of v's high 16 bits is taken
    mod 2^16 first, so no intermediate reaches 2^49."""
    return ((((v >> 16) * k) & 0xFFFF) << 16) + (v & 0xFFFF) * k & _MASK


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """An integer hash (lowbias32, C. Wellons) on int64 tensors holding 32-bit values."""
    v = v ^ (v >> 16)
    v = _mul32(v, 0x7FEB352D)
    v = v ^ (v >> 15)
    v = _mul32(v, 0x846CA68B)
    return v ^ (v >> 16)


def _uniform(c: torch.Tensor, y: torch.Tensor, x: torch.Tensor, salt: int) -> torch.Tensor:
    """(0, 1) values, 24 random bits each, from the broadcast positions."""
    v = _hash32((x & _MASK) ^ _hash32(((y & _MASK) ^ _hash32((c + salt) & _MASK)) & _MASK))
    return ((v >> 8).to(torch.float64) + 0.5) / float(1 << 24)


def position_noise(channels: int, height: int, width: int, top: int = 0, left: int = 0,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   stream: int = 0) -> torch.Tensor:
    """(1, channels, height, width) standard Gaussian noise (Box-Muller of two hashed uniforms) whose value at
    pixel (top + y, left + x) of channel c depends on (stream, c, top + y, left + x) only."""
    c = torch.arange(channels, device=device, dtype=torch.int64).view(-1, 1, 1)
    y = torch.arange(top, top + height, device=device, dtype=torch.int64).view(1, -1, 1)
    x = torch.arange(left, left + width, device=device, dtype=torch.int64).view(1, 1, -1)
    base = 0x9E3779B9 * (2 * stream + 1)
    u1, u2 = _uniform(c, y, x, base), _uniform(c, y, x, base + 0x85EBCA6B)
    gauss = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return gauss.to(dtype)[None]
