"""The flat-detail loss (train/losses/flat_detail.py): bench/artefacts.py's flat-noise check as a loss."""
import numpy as np
import torch

from hitok.bench.artefacts import _detail_rms
from hitok.bench.metrics import to_y
from hitok.train.losses.flat_detail import _detail_ms, flat_detail_loss


def _half_flat_photo(seed: int = 0) -> torch.Tensor:
    """(1, 3, 64, 128): a flat grey left half (0.2 grey levels of grain), a busy right half (random texture)."""
    g = torch.Generator().manual_seed(seed)
    photo = torch.full((1, 3, 64, 128), 0.5) + 0.2 / 255 * torch.randn(1, 3, 64, 128, generator=g)
    photo[..., 64:] += 0.15 * torch.randn(1, 3, 64, 64, generator=g)
    return photo


def _mottle(seed: int = 1, grey_levels: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return grey_levels / 255 * torch.randn(1, 1, 64, 128, generator=g).expand(1, 3, 64, 128)


def test_windows_measure_what_the_eval_check_measures():
    """Its per-window detail RMS is the eval's (same blur, same windows) on an 8-bit image, to 0.05 grey levels
    away from the borders (the two pad differently)."""
    img = (_half_flat_photo() + _mottle()).clamp(0, 1)
    u8 = (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ours = _detail_ms(torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255, 16).sqrt()[0, 0].numpy() * 255
    theirs = _detail_rms(to_y(u8))
    assert np.abs(ours - theirs)[1:-1, 1:-1].max() < 0.05


def test_mottle_on_the_flat_half_costs_and_texture_on_the_busy_half_does_not():
    photo = _half_flat_photo()
    assert flat_detail_loss(photo, photo).item() == 0.0
    on_flat, on_busy = _mottle(), _mottle()
    on_flat[..., 64:] = 0
    on_busy[..., :64] = 0
    loss_flat = flat_detail_loss(photo + on_flat, photo).item() * 255
    assert 2.0 < loss_flat < 3.5  # ~3 grey levels of mottle (less what the blur keeps, less the photo's grain)
    assert flat_detail_loss(photo + on_busy, photo).item() * 255 < 0.05  # only the windows at the seam


def test_gradient_reaches_the_flat_half_only_and_no_flat_window_means_zero():
    photo = _half_flat_photo()
    out = (photo + _mottle()).requires_grad_(True)
    flat_detail_loss(out, photo).backward()
    grad = out.grad.abs().sum(dim=(0, 1))
    assert grad[:, :40].sum() > 0 and grad[:, 88:].sum() == 0  # the blur's reach: 12 px past the 64 px seam
    busy = photo[..., 64:]
    assert flat_detail_loss(busy + _mottle()[..., 64:], busy).item() == 0.0


def test_on_limits_the_loss_to_the_chosen_samples():
    """Mottle in the first of two samples: counted when the first is on, nothing when only the second is (its
    flat windows are clean), and the per-window mean of the chosen samples is the loss of that sample alone."""
    photo = _half_flat_photo().expand(2, -1, -1, -1)
    out = photo.clone()
    out[:1] = out[:1] + _mottle()
    alone = flat_detail_loss(out[:1], photo[:1])
    assert alone.item() * 255 > 2.0
    assert torch.allclose(flat_detail_loss(out, photo, on=torch.tensor([True, False])), alone)
    assert flat_detail_loss(out, photo, on=torch.tensor([False, True])).item() == 0.0
    assert flat_detail_loss(out, photo, on=torch.tensor([False, False])).item() == 0.0
