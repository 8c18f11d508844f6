"""A loss on detail an x4 upscaler draws on the LR grid rather than on the picture.

Measured on the restorer (models/restorer.py, two x2 pixel shuffles; MODEL_CARD.md): under a GAN or a texture
statistics loss, the cheapest detail it finds within a few hundred steps is a difference between its 16
sub-pixel phases (position mod 4): stripes of period 2 px, then (with a loss on those frequencies) 4 px stripes
at an offset, or flat 4 x 4 blocks with the detail piled on their borders. A photo's detail does not know where
the LR grid is: tile by tile, its mean and its strength are the same at every phase, up to sampling noise. So
this loss asks the same of the output, for both moments at once — the first sees stripes and checkerboards at
any offset (it is the power at the grid frequencies, by Parseval), the second pixelation — and allows the
photo's own spread in each tile.

(Tried first and dropped, measured on training crops: asking the outputs for the photo moved by 1-3 HR px to
differ by that move only. Real-ESRGAN's texture changes under such a move as much as the stripes do: 0.017-0.022
against 0.019-0.029 mean |difference|, the faithful restorer 0.008.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .texture_stats import highpass

SCALE = 4


def _differences(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2C, H, W): the horizontal and vertical first differences (zero past the last pixel)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([dx, dy], dim=1)


def _phase_moments(detail: torch.Tensor, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> per tile x tile tile, the mean and the RMS of the detail at each of the 16 sub-pixel
    phases (position mod 4): two (B, C, tiles_h, tiles_w, 4, 4) tensors."""
    b, c = detail.shape[:2]
    t = detail.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, th, tw, tile, tile)
    th, tw = t.shape[2:4]
    t = t.reshape(b, c, th, tw, tile // SCALE, SCALE, tile // SCALE, SCALE)
    return t.mean(dim=(4, 6)), t.pow(2).mean(dim=(4, 6)).add(1e-8).sqrt()


def _spread(v: torch.Tensor) -> torch.Tensor:
    """RMS over the 16 phases (the last two dims) of v minus its phase mean."""
    return (v - v.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(-2, -1)).add(1e-12).sqrt()  # finite gradient at 0


def phase_moments_loss(output: torch.Tensor, photo: torch.Tensor, tile: int = 16) -> torch.Tensor:
    """How much more the output's detail (first differences) depends on the sub-pixel phase than the photo's,
    tile by tile: the spread over the 16 phases of the mean (stripes, checkerboards: the grid frequencies) and
    of the RMS relative to its phase average (pixelation: all change on the LR cells' borders), each in excess
    of the photo's, whose detail does not know where the LR grid is (its spreads are sampling noise)."""
    def spreads(x):
        mean, rms = _phase_moments(_differences(x.float()), tile)
        return _spread(mean), _spread(rms) / (rms.mean(dim=(-2, -1)) + 2 / 255)

    (m_out, r_out), (m_photo, r_photo) = spreads(output), spreads(photo)
    return F.relu(m_out - m_photo).mean() + 0.02 * F.relu(r_out - r_photo).mean()
