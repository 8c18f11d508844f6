"""A loss on detail an x4 upscaler draws on the LR grid rather than on the picture.

Measured on the restorer (models/restorer.py, two x2 pixel shuffles; MODEL_CARD.md): under a GAN or a texture
statistics loss, the cheapest detail it finds within a few hundred steps is a difference between its 16
sub-pixel phases (position mod 4): stripes of period 2 px, then (with a loss on those frequencies) 4 px stripes
at an offset, or flat 4 x 4 blocks with the detail piled on their borders. A photo's detail does not know where
the LR grid is: its mean and its strength are the same at every phase, up to sampling noise. So this loss asks
the same of the output's first differences, for both moments at once — the first sees stripes and
checkerboards at any offset (the power at the grid frequencies, by Parseval), the second pixelation — image
by image, in excess of the photo's.

Measured in training (MODEL_CARD.md): at weight 200 it cut a GAN run's grid pattern 5-10x at equal steps (the
eval's periodic score 8 / 6 where the same recipe without it had 38 / 122), and an earlier per-tile form
(each tile allowed the photo's spread) let a faint pattern through. What it still misses: a faint
checkerboard on flat areas beside busy ones (a texture statistics run showed one at 200 %), because the
sampling-noise correction is only approximate on real photos (neighbouring pixels are correlated) and the busy
tiles' scatter outweighs the flat tiles' pattern in the image's mean. phase_tile_loss adds the tile-by-tile
first moment for that (measured once beside the per-image form, MODEL_CARD.md).

(Tried first and dropped, measured on training crops: asking the outputs for the photo moved by 1-3 HR px to
differ by that move only. Real-ESRGAN's texture changes under such a move as much as the stripes do: 0.017-0.022
against 0.019-0.029 mean |difference|, the faithful restorer 0.008.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE = 4


def _differences(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2C, H, W): the horizontal and vertical first differences, zero past the last pixel
    (that zero falls on phase 3 of the last column and row: a small bias, the same for output and photo; kept
    as it is because it is the form the runs in MODEL_CARD.md measured)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([dx, dy], dim=1)


def _phase_moments(detail: torch.Tensor, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> per tile x tile tile, the mean and the mean square of the detail at each of the 16
    sub-pixel phases (position mod 4): two (B, C, tiles_h, tiles_w, 4, 4) tensors."""
    b, c = detail.shape[:2]
    t = detail.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, th, tw, tile, tile)
    th, tw = t.shape[2:4]
    t = t.reshape(b, c, th, tw, tile // SCALE, SCALE, tile // SCALE, SCALE)
    return t.mean(dim=(4, 6)), t.pow(2).mean(dim=(4, 6))


def _pattern_power(mean: torch.Tensor, square: torch.Tensor, samples: int) -> torch.Tensor:
    """Per image (B,): the power of a pattern tied to the phases, averaged over tiles and channels: the variance
    of the 16 phase means less what sampling alone would give it (the within-phase variance / samples), so
    texture that ignores the grid scores ~0 or below however strong (below: on real photos neighbouring pixels
    are correlated, which this correction overestimates), and a faint pattern repeated over the image adds up."""
    spread = (mean - mean.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(-2, -1))
    noise = (square - mean.pow(2)).mean(dim=(-2, -1)) / samples
    return (spread - noise).flatten(1).mean(dim=1)


def _border_share(square: torch.Tensor) -> torch.Tensor:
    """Per image (B,): the spread of the 16 phase RMS amplitudes relative to their mean (pixelation: all change
    on the LR cells' borders), averaged over tiles and channels."""
    rms = square.add(1e-8).sqrt()
    spread = (rms - rms.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(-2, -1)).add(1e-12).sqrt()
    return (spread / (rms.mean(dim=(-2, -1)) + 2 / 255)).flatten(1).mean(dim=1)


def phase_moments_loss(output: torch.Tensor, photo: torch.Tensor, tile: int = 16) -> torch.Tensor:
    """How much more the output's detail (first differences) depends on the sub-pixel phase than the photo's,
    image by image (tiles of `tile` px, so a pattern that changes its phase across the image still counts): the
    RMS amplitude of a pattern in the phase means (stripes, checkerboards: the grid frequencies) and the
    relative spread of the phase amplitudes (pixelation), each in excess of the photo's."""
    if tile % SCALE:
        raise ValueError(f"tile must be a multiple of {SCALE} (one tile holds whole LR cells), got {tile}")

    def moments(x):
        mean, square = _phase_moments(_differences(x.float()), tile)
        power = _pattern_power(mean, square, (tile // SCALE) ** 2)
        return F.relu(power).add(1e-12).sqrt(), _border_share(square)

    (a_out, b_out), (a_photo, b_photo) = moments(output), moments(photo)
    return (F.relu(a_out - a_photo) + 0.005 * F.relu(b_out - b_photo)).mean()


def phase_tile_loss(output: torch.Tensor, photo: torch.Tensor, tile: int = 16) -> torch.Tensor:
    """The first moment of phase_moments_loss tile by tile: how much more each tile's 16 phase means (of the
    first differences) spread than the photo's same tile, averaged. No sampling-noise correction, so a busy tile
    is allowed its own scatter and a pattern on a flat tile beside it is not hidden by that scatter (what the
    per-image form misses). Added to it, not instead: alone this per-tile form let a faint pattern through."""
    if tile % SCALE:
        raise ValueError(f"tile must be a multiple of {SCALE} (one tile holds whole LR cells), got {tile}")

    def spread(x):
        mean, _ = _phase_moments(_differences(x.float()), tile)
        return (mean - mean.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(-2, -1)).add(1e-12).sqrt()

    return F.relu(spread(output) - spread(photo)).mean()
