"""The LR-consistent colour fix (models/colorfix.py) and its place in tiled inference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hitok.models import colorfix


def _smooth_image(seed: int = 0, size: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 16, size // 16, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_colour_drift_is_removed_and_detail_kept():
    hr = _smooth_image()
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True)
    detail = 0.05 * torch.sin(torch.arange(128.0) * 2.5).view(1, 1, 1, -1)  # 2.5 rad/px: above the LR band
    drifted = (hr + detail + torch.tensor([0.08, -0.06, 0.04]).view(1, 3, 1, 1)).clamp(0, 1)
    fixed = colorfix.color_fix(drifted, lr)
    inner = (..., slice(16, -16), slice(16, -16))
    err_before = (drifted - hr - detail)[inner].abs().mean()
    err_after = (fixed - hr - detail)[inner].abs().mean()
    assert err_after < 0.2 * err_before  # the offset is gone...
    hp = lambda x: x - colorfix.gaussian_blur(x, 2.0)
    kept = F.cosine_similarity(hp(fixed)[inner].flatten(), hp(drifted)[inner].flatten(), dim=0)
    assert kept > 0.95  # ...and the fine band is still the model's


def test_fixed_output_is_consistent_with_the_input_in_the_coarse_band():
    hr, lr = _smooth_image(1), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    fixed = colorfix.color_fix(hr, lr)
    assert fixed.shape == hr.shape and fixed.min() >= 0 and fixed.max() <= 1
    coarse = lambda x: colorfix.gaussian_blur(x, 2.0)[..., 4:-4, 4:-4]
    down = lambda x: F.interpolate(x, size=(32, 32), mode="bicubic", antialias=True)
    assert (coarse(down(fixed)) - coarse(lr)).abs().mean() < 0.5 * (coarse(down(hr)) - coarse(lr)).abs().mean()


def test_half_precision_input_comes_back_in_its_dtype():
    sr, lr = _smooth_image().half(), torch.rand(1, 3, 32, 32).half()
    assert colorfix.color_fix(sr, lr).dtype == torch.float16


def test_tiles_with_the_fix_agree_with_the_whole_image_beyond_its_reach(windowed_tiny):
    model = windowed_tiny
    rf = model.receptive_field(color_fix=True)
    assert rf == model.receptive_field() + colorfix.reach()
    lr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    off, side = 16, 96
    inner = slice(4 * rf, 4 * (side - rf))
    with torch.inference_mode():
        whole = model.upscale(lr, color_fix=True)
        tile = model.upscale(lr[..., off:off + side, off:off + side], color_fix=True)[..., inner, inner]
    ref = whole[..., 4 * off:4 * (off + side), 4 * off:4 * (off + side)][..., inner, inner]
    assert torch.allclose(tile, ref, atol=1e-5)
