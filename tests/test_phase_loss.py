"""The sub-pixel phase loss (train/losses/subpixel.py): detail tied to the LR grid costs, the photo's does not."""
import pytest
import torch
import torch.nn.functional as F

from hitok.train.losses.subpixel import phase_moments_loss, phase_tile_loss


def _photo(n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.1 * F.avg_pool2d(torch.randn(1, 3, n + 1, n + 1, generator=g), 2, stride=1)).clamp(0, 1)


def test_stripes_at_any_offset_and_pixelation_cost_what_texture_does_not():
    photo = _photo()
    smooth = F.avg_pool2d(F.pad(photo, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    xx = torch.arange(64)
    loss = {"photo": phase_moments_loss(photo, photo).item(),
            "other texture": phase_moments_loss(_photo(seed=2), photo).item(),  # same kind, elsewhere
            "smooth": phase_moments_loss(smooth, photo).item()}
    for period, offset in [(2, 0), (4, 1), (4, 3)]:
        stripes = smooth + 0.03 * torch.cos(2 * torch.pi * (xx - offset) / period)
        loss[f"stripes {period} px +{offset}"] = phase_moments_loss(stripes, photo).item()
    cells = F.avg_pool2d(photo, 4)  # each LR pixel a flat 4 x 4 block: detail only on the cells' borders
    loss["pixelated"] = phase_moments_loss(F.interpolate(cells, scale_factor=4, mode="nearest"), photo).item()
    allowed = loss["other texture"]  # the sampling noise of two textures' phase statistics
    assert loss["photo"] == 0 and loss["smooth"] < 0.05 * allowed
    assert all(loss[k] > 3 * allowed for k in loss if k.startswith(("stripes", "pixelated"))), loss


def test_the_gradient_takes_stripes_out():
    photo = _photo()
    out = (photo + 0.03 * torch.cos(torch.pi * torch.arange(64))).requires_grad_(True)
    phase_moments_loss(out, photo).backward()
    stepped = out.detach() - 0.5 * out.grad
    assert phase_moments_loss(stepped, photo) < phase_moments_loss(out.detach(), photo)


@pytest.mark.parametrize("loss", [phase_moments_loss, phase_tile_loss])
def test_a_flat_tile_has_a_finite_gradient(loss):
    """A clipped white sky: every phase statistic equal, so the spreads are 0 (sqrt's gradient there is inf)."""
    out = torch.ones(1, 3, 32, 32, requires_grad=True)
    loss(out, torch.ones(1, 3, 32, 32)).backward()
    assert torch.isfinite(out.grad).all()


def test_the_tile_form_sees_a_faint_checkerboard_on_a_flat_area_beside_a_busy_one():
    """What a texture run drew (MODEL_CARD.md): a 2.5/255 diagonal checkerboard on the sky, busy foliage beside
    it. The per-image form scores it below another texture of the same kind (the busy half's scatter outweighs
    it); the tile form scores it well above."""
    n = 64
    busy = (torch.arange(n) < n // 2).float()  # the left half busy, the right half nearly flat
    photo = (0.5 + 3 * (_photo(seed=1) - 0.5) * busy + 0.05 * (_photo(seed=5) - 0.5)).clamp(0, 1)
    other = (0.5 + 3 * (_photo(seed=2) - 0.5) * busy + 0.05 * (_photo(seed=6) - 0.5)).clamp(0, 1)
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    checkered = photo + 0.01 * torch.cos(torch.pi * (x + y) / 2) * (1 - busy)
    assert phase_moments_loss(checkered, photo) < phase_moments_loss(other, photo)
    assert phase_tile_loss(checkered, photo) > 1.3 * phase_tile_loss(other, photo)
    assert phase_tile_loss(photo, photo) == 0
