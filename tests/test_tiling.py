"""hitok.tiling: aligned tile plans, seamless blending, OOM fallback, --tile auto."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_corpus import smooth_rgb
from hitok import tiling
from hitok.imageio import Picture
from hitok.upscaler import Upscaler

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared 2-core machine


def bicubic4(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, scale_factor=4, mode="bicubic", align_corners=False)


def context_sensitive(t: torch.Tensor) -> torch.Tensor:
    """Like a global-attention model: the whole tile's content shifts every output pixel."""
    return bicubic4(t) + 0.3 * (t.mean() - 0.5)


def smooth_lr(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.from_numpy(smooth_rgb(h, w, seed=2).astype(np.float32) / 255).permute(2, 0, 1)[None]


def tile_edges(starts, tile: int, size: int, scale: int) -> list[int]:
    """HR columns where a tile begins or ends inside the image."""
    cols = {c for x in starts for c in (x * scale, (x + tile) * scale)}
    return sorted(c for c in cols if 0 < c < size * scale)


def seam_ratio(img: np.ndarray, edges: list[int], axis: int) -> float:
    """Mean gradient energy across tile edges / mean elsewhere (1.0 = no seam)."""
    g = np.abs(np.diff(img.astype(np.float64), axis=axis)).mean(axis=(0, 2) if axis == 1 else (1, 2))
    at = np.array([c - 1 for c in edges])  # g[c-1] is the step between pixel c-1 and c
    rest = np.setdiff1d(np.arange(len(g)), at)
    return float(g[at].mean() / g[rest].mean())


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def test_plan_is_aligned_and_covers_the_image():
    plan = tiling.plan_tiles(40, 56, tile=16, overlap=4, grid=4)
    assert plan.ys == (0, 12, 24) and plan.xs == (0, 12, 24, 36, 40)
    for ys, t, n in ((plan.ys, plan.tile_h, 40), (plan.xs, plan.tile_w, 56)):
        assert all(p % 4 == 0 for p in ys) and ys[-1] + t == n
        assert all(b - a <= t - plan.overlap for a, b in zip(ys, ys[1:]))  # neighbours overlap
    assert tiling.plan_tiles(40, 56, tile=17, overlap=50, grid=4).overlap == 8  # rounded, capped at tile/2
    assert len(tiling.plan_tiles(8, 8, tile=64, overlap=16, grid=2)) == 1
    with pytest.raises(ValueError):
        tiling.plan_tiles(41, 56, 16, 4, 4)


def test_window_never_zero_and_flat_in_the_middle():
    w = tiling.ramp(20, 6, rise=True, fall=True)
    assert w.min() > 0 and torch.all(w[6:14] == 1) and torch.allclose(w, w.flip(0))
    assert torch.all(tiling.ramp(20, 6, rise=False, fall=False) == 1)


@pytest.mark.parametrize("tile,overlap", [(16, 4), (12, 4), (20, 8)])
def test_tiled_bicubic_matches_whole_image(tile, overlap):
    lr = smooth_lr(37, 53)  # not a multiple of the alignment: padded, then cropped
    whole, whole_plan = tiling.tiled_apply(bicubic4, lr, 4, 1000, 0, 4)
    tiled, plan = tiling.tiled_apply(bicubic4, lr, 4, tile, overlap, 4)
    assert tiled.shape == whole.shape == (148, 212, 3)
    assert len(whole_plan) == 1 and plan == tiling.plan_image(37, 53, tile, overlap, 4)  # the plan it used
    assert np.abs(tiled - whole).max() < 2e-3


def test_integer_output_and_progress():
    calls = []
    out, _ = tiling.tiled_apply(bicubic4, smooth_lr(), 4, 16, 4, 4, np.uint16,
                                progress=lambda d, t: calls.append((d, t)))
    assert out.dtype == np.uint16 and out.max() > 255
    assert calls == [(i, 15) for i in range(1, 16)]


def test_blending_hides_seams_a_hard_cut_shows():
    lr = smooth_lr()
    hard, hard_plan = tiling.tiled_apply(context_sensitive, lr, 4, 16, 0, 4)
    soft, soft_plan = tiling.tiled_apply(context_sensitive, lr, 4, 16, 8, 4)
    hard_ratio = seam_ratio(hard, tile_edges(hard_plan.xs, 16, 56, 4), axis=1)
    soft_x = seam_ratio(soft, tile_edges(soft_plan.xs, 16, 56, 4), axis=1)
    soft_y = seam_ratio(soft, tile_edges(soft_plan.ys, 16, 40, 4), axis=0)
    assert hard_ratio > 3  # the metric does see a seam when there is one
    assert soft_x < 1.3 and soft_y < 1.3


def test_oom_halves_the_tile():
    seen = []

    def hungry(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[-1])
        if t.shape[-1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return bicubic4(t)

    retries = []
    out, plan = tiling.tiled_apply_with_retry(hungry, smooth_lr(), 4, 64, 4, 4, torch.device("cpu"),
                                              on_retry=lambda a, b: retries.append((a, b)))
    assert (plan.tile_h, plan.tile_w) == (16, 16) and retries == [(64, 32), (32, 16)] and out.shape == (160, 224, 3)
    assert np.isfinite(out).all()

    def always_oom(t):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    with pytest.raises(RuntimeError, match="allocate"):
        tiling.tiled_apply_with_retry(always_oom, smooth_lr(), 4, 64, 4, 4, torch.device("cpu"))
    with pytest.raises(ValueError):  # anything that is not OOM is not retried
        tiling.tiled_apply_with_retry(lambda t: (_ for _ in ()).throw(ValueError("bug")), smooth_lr(),
                                      4, 64, 4, 4, torch.device("cpu"))


def test_auto_tile_follows_free_memory():
    cpu = torch.device("cpu")
    assert tiling.free_memory_bytes(cpu) > 0
    small = tiling.auto_tile(100_000, 200 << 20, cpu, 4, 10_000)
    mid = tiling.auto_tile(100_000, 2 << 30, cpu, 4, 10_000)
    big = tiling.auto_tile(100_000, 32 << 30, cpu, 4, 10_000)
    assert small % 4 == 0 and mid % 4 == 0 and 16 <= small < mid < big
    assert big == tiling.AUTO_MAX_TOKENS["cpu"] * 4  # capped
    assert tiling.auto_tile(100_000, 64 << 30, cpu, 4, 30) == 32  # never beyond the image
    assert tiling.auto_tile(1e12, 1 << 20, cpu, 4, 1000) == 16  # floor: 4 tokens


def test_model_tiled_vs_whole(tiny_model, record_property):
    """Same model, same photo: tiled output against one whole-image pass (PSNR and seams)."""
    up = Upscaler(tiny_model, torch.device("cpu"), torch.float32)
    pic = Picture(pixels=smooth_rgb(48, 64, seed=1))
    whole, whole_plan = up.upscale_picture(pic, tile=64)
    tiled, plan = up.upscale_picture(pic, tile=24, overlap=8)
    assert len(whole_plan) == 1 and len(plan) == 12
    a, b = whole.pixels / 255.0, tiled.pixels / 255.0
    value = psnr(a, b)
    ex, ey = tile_edges(plan.xs, 24, 64, 4), tile_edges(plan.ys, 24, 48, 4)
    ratios = (seam_ratio(b, ex, 1), seam_ratio(b, ey, 0))
    baseline = (seam_ratio(a, ex, 1), seam_ratio(a, ey, 0))  # the same columns in the whole image
    record_property("psnr_tiled_vs_whole_db", round(value, 2))
    record_property("seam_ratio_tiled_xy", [round(r, 3) for r in ratios])
    record_property("seam_ratio_whole_xy", [round(r, 3) for r in baseline])
    assert value > 35
    for r, r0 in zip(ratios, baseline):
        assert r < max(1.2, 1.1 * r0)


def test_thin_image_is_one_tile_padded_to_a_token_not_a_window():
    """A 3 x 2000 strip under a 192 px auto tile on a 16 px window grid: one 4 x 2000 tile, not twelve 16 x 192."""
    plan = tiling.plan_image(3, 2000, tile=192, overlap=16, grid=16, balance=True, align=2)
    assert len(plan) == 1 and (plan.height, plan.width) == (4, 2000)
    wide = tiling.plan_image(3, 20000, tile=192, overlap=16, grid=16, balance=True, align=2)
    assert wide.tile_h * wide.tile_w <= 192 * 192 and len(wide) == 3  # memory still bounded by the tile's area
    given = tiling.plan_image(3, 2000, tile=192, overlap=16, grid=16, align=2)  # a --tile the user chose is kept
    assert given.tile_w == 192


def test_thin_strip_through_tiles_matches_whole():
    lr = smooth_lr(3, 200)
    out, _ = tiling.tiled_apply(bicubic4, lr, 4, 64, 8, 16, balance=True, align=1)
    whole = bicubic4(lr)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    assert out.shape == (12, 800, 3) and np.abs(out - whole).max() < 1e-5
