"""Noise tied to picture position: what the restorer's noise inputs (models/restorer.py) get at inference.

A deterministic network asked for texture the LR cannot predict (where each blade of grass or grain of sand
goes) draws the cheapest thing with the asked-for statistics: measured on the restorer, a pattern on its
pixel-shuffle grid (MODEL_CARD.md, "Texture statistics"). Given noise, it can shape it instead (StyleGAN's
per-pixel noise inputs; ESRGAN+, Rakotonirina & Rasoanaivo 2020, for super-resolution). Training draws fresh
standard Gaussian noise each step (torch.randn); inference draws the picture's noise in 32 x 32 px blocks,
each block's values from torch.randn of a CPU generator seeded with a hash of (stream, block row, block column),
so an image's output is the same on every run and every tile of it sees the same noise where tiles overlap.
`stream` keeps the LR-resolution body noise and the output-resolution grain apart (otherwise LR pixel (y, x) and
output pixel (y, x) would share values).

Measured (2 AMD EPYC cores, 2 threads, 64 channels, best of 10, nothing else running): 4.0 / 13.7 ms for a
128 / 256 px LR tile against 17 / 329 ms for the earlier per-value integer hash with Box-Muller in float64,
which made `--texture` cost ~45 % more time per tile; now 0.097 s against the default's 0.091 s per 128 x 128
input (`python -m hitok.bench.speed`). The values are drawn on the CPU (one generator, any device) and moved."""
from __future__ import annotations

import torch

BLOCK = 32
_MASK64 = (1 << 64) - 1


def _seed(stream: int, block_row: int, block_col: int) -> int:
    """A 64-bit seed from a block's key (splitmix64 finaliser, S. Vigna); negative rows and columns are fine."""
    v = (stream * 0x9E3779B97F4A7C15 + ((block_row & 0xFFFFFFFF) << 32 | (block_col & 0xFFFFFFFF))) & _MASK64
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & _MASK64
    return v ^ (v >> 31)


def position_noise(channels: int, height: int, width: int, top: int = 0, left: int = 0,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   stream: int = 0) -> torch.Tensor:
    """(1, channels, height, width) standard Gaussian noise whose value at pixel (top + y, left + x) of channel c
    depends on (stream, channels, c, top + y, left + x) only."""
    out = torch.empty(channels, height, width)
    gen = torch.Generator()
    for block_row in range(top // BLOCK, (top + height - 1) // BLOCK + 1):
        y0 = block_row * BLOCK
        ys, ye = max(y0, top), min(y0 + BLOCK, top + height)
        for block_col in range(left // BLOCK, (left + width - 1) // BLOCK + 1):
            x0 = block_col * BLOCK
            xs, xe = max(x0, left), min(x0 + BLOCK, left + width)
            gen.manual_seed(_seed(stream, block_row, block_col))
            block = torch.randn(channels, BLOCK, BLOCK, generator=gen)
            out[:, ys - top:ye - top, xs - left:xe - left] = block[:, ys - y0:ye - y0, xs - x0:xe - x0]
    return out.to(device=device, dtype=dtype)[None]
