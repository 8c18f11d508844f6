"""Seamless tiled inference with memory bounded by the tile, not the photo.

The LR image is cut into tiles whose sides are multiples of the model's tile grid (``grid``:
``model.tile_align`` LR pixels, a token or a whole attention window), overlapping by ``overlap``
LR pixels; ``align`` (``model.lr_align``, one token) is what the model needs every side to be a
multiple of. Each tile goes through any callable ``fn(lr_tile (1,C,h,w)) -> hr_tile (1,C,sh,sw)``,
and the plan that was used comes back with the output. Instead of pasting the centres of padded
tiles with a hard cut (Real-ESRGAN's tile mode), HR tiles are blended with a separable
raised-cosine (Hann) ramp over the overlap and normalised by the accumulated weight (weighted
overlap-add), so two tiles that disagree fade into each other over the whole overlap and neither
a step nor a kink shows at a tile border. Tile edges on the image border keep full weight.

Memory: the model only ever sees one tile. The float accumulator is one band of tile rows
(tile height x image width); rows above the current band are final and are written straight
into the integer output array as soon as no later tile can touch them.

``--tile auto`` = the largest aligned tile whose estimated peak memory fits a fraction of the
free device memory (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` in /proc/meminfo),
capped per device (:data:`AUTO_MAX_TOKENS`, or :data:`AUTO_MAX_TOKENS_WINDOWED` for models whose
attention is windowed); :func:`tiled_apply_with_retry` halves the tile on an out-of-memory error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

TileFn = Callable[..., torch.Tensor]  # fn(lr_tile) -> hr_tile, or with_origin: fn(lr_tile, (top, left))
Progress = Callable[[int, int], None]  # (tiles done, tiles total)

# Largest tile side --tile auto picks, in tokens (x align = LR pixels). Global attention costs
# grow with the square of a tile's token count, so on a CPU more context comes at a steep price
# in time; the paper preset (4 LR px per token) gets 256 px tiles on a CPU, 512 on a GPU.
AUTO_MAX_TOKENS = {"cuda": 128, "mps": 96, "cpu": 64}
# Windowed attention (models/window.py) costs the same per token whatever the tile, so for such
# models memory picks the tile and the cap only bounds one tile's latency. On a CPU the time per
# pixel still grows with the tile once its activations leave the caches, while the overlap's share
# of the work shrinks with it; 96 tokens (192 LR px for the small preset's 2 px tokens) is where the
# two meet (docs/benchmarks.md, "The CPU tile cap for windowed models"; `python -m hitok.bench.speed`).
AUTO_MAX_TOKENS_WINDOWED = {"cuda": 1024, "mps": 512, "cpu": 96}
MEMORY_FRACTION = {"cuda": 0.8, "mps": 0.5, "cpu": 0.5}


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def round_down(x: int, m: int) -> int:
    return (x // m) * m


@dataclass(frozen=True)
class TilePlan:
    """Tile positions (top-left corners, LR pixels) over a padded LR image."""

    height: int  # padded LR height (a multiple of grid, or of align where one tile covers it)
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def _positions(n: int, t: int, o: int) -> tuple[int, ...]:
    if t >= n:
        return (0,)
    step = t - o
    pos = list(range(0, n - t, step))
    return tuple(pos + [n - t])  # the last tile ends exactly at the border


def _balanced(n: int, t: int, o: int, grid: int) -> int:
    """The smallest tile side on the grid that covers n in as few tiles as side t does.

    Full-size tiles with the last one flush to the border waste work when n is just over a tile
    (n=256, t=192, o=16: two 192 px tiles, 2.25x the pixels); evening them out costs ~o per cut."""
    if t >= n:
        return n
    k = -(-(n - o) // (t - o))  # tiles of side t needed
    even = min(t, round_up(-(-(n - o) // k) + o, grid))
    return even if round_down(even // 2, grid) >= o else t  # keep the overlap within half a tile


def plan_tiles(height: int, width: int, tile: int | tuple[int, int], overlap: int, grid: int,
               balance: bool = False, align: int | None = None) -> TilePlan:
    """Plan tiles on the ``grid`` over a padded (height, width) LR image.

    ``tile``: a side, or (height, width). Each side of the image is a multiple of ``grid``, or, when one
    tile covers it, of ``align`` (default ``grid``). ``balance``: shrink each axis's tiles as far as the
    same number of tiles still covers it (--tile auto: ``tile`` is then a ceiling, not a request)."""
    align = align or grid
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    th, tw = max(grid, round_up(th, grid)), max(grid, round_up(tw, grid))
    for n, t in ((height, th), (width, tw)):
        if n % grid and (n > t or n % align):
            raise ValueError(f"image {height}x{width} is not padded to a multiple of {grid}")
    # Overlap must leave a positive step on the grid, and anything beyond half a tile buys nothing.
    overlap = min(round_up(max(overlap, 0), grid), round_down(min(th, tw) // 2, grid))
    th, tw = min(th, height), min(tw, width)
    if balance:
        th, tw = _balanced(height, th, overlap, grid), _balanced(width, tw, overlap, grid)
    return TilePlan(height, width, th, tw, overlap, _positions(height, th, overlap), _positions(width, tw, overlap))


def _padded_side(n: int, tile: int, grid: int, align: int) -> int:
    one_tile = round_up(n, align)
    return one_tile if one_tile <= tile else round_up(n, grid)


def plan_image(height: int, width: int, tile: int, overlap: int, grid: int, balance: bool = False,
               align: int | None = None) -> TilePlan:
    """The tile plan for an unpadded (height, width) LR image: pads it, then :func:`plan_tiles`.

    A side that one tile covers is padded only to a whole token (``align``), not to the tile ``grid`` (for a
    windowed model a whole attention window): the model pads windows itself, with masked tokens, so a
    3 px high strip is not made 16 px high of replicated pixels. With ``balance`` (--tile auto, where
    ``tile`` is a memory ceiling) a thin image's tiles stretch along its long side to the square tile's
    area: the same memory, and a 3 x 2000 px strip in one tile instead of twelve."""
    align = align or grid
    tile = max(grid, round_up(tile, grid))
    hp, wp = _padded_side(height, tile, grid, align), _padded_side(width, tile, grid, align)
    th = tw = tile
    if balance and hp <= tile < wp:
        tw = max(tile, round_down(tile * tile // hp, grid))
        wp = _padded_side(width, tw, grid, align)
    elif balance and wp <= tile < hp:
        th = max(tile, round_down(tile * tile // wp, grid))
        hp = _padded_side(height, th, grid, align)
    return plan_tiles(hp, wp, (th, tw), overlap, grid, balance, align)


def ramp(n: int, length: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D window of size n: raised-cosine rise/fall over ``length`` samples, 1 in between; never 0."""
    w = torch.ones(n)
    if length > 0:
        r = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(length) + 0.5) / length)
        if rise:
            w[:length] = torch.minimum(w[:length], r)
        if fall:
            w[n - length:] = torch.minimum(w[n - length:], r.flip(0))
    return w


def _to_output(rows: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(C, h, w) float in [0, 1] -> (h, w, C) array of the output dtype."""
    rows = rows.clamp_(0.0, 1.0).permute(1, 2, 0)
    if np.issubdtype(dtype, np.integer):
        top = np.iinfo(dtype).max
        return (rows * top + 0.5).floor_().numpy().astype(dtype)
    return rows.numpy().astype(dtype)


def tiled_apply(fn: TileFn, lr: torch.Tensor, scale: int, tile: int, overlap: int, grid: int,
                out_dtype: np.dtype = np.float32, progress: Progress | None = None,
                balance: bool = False, align: int | None = None,
                with_origin: bool = False) -> tuple[np.ndarray, TilePlan]:
    """Run ``fn`` tile by tile over ``lr`` (1, C, h, w) in [0, 1]; return ((h*scale, w*scale, C) of out_dtype,
    the plan it used).

    ``grid``: the tile grid; ``align``: what ``fn`` needs the sides to be multiples of (:func:`plan_image`);
    ``with_origin``: call ``fn(tile, (top, left))``, where the tile starts in ``lr`` (for noise tied to
    picture position)."""
    _, c, h, w = lr.shape
    plan = plan_image(h, w, tile, overlap, grid, balance, align)
    hp, wp = plan.height, plan.width
    if (hp, wp) != (h, w):
        # Replicate padding up to the token grid; the padded border is cropped off the output.
        lr = F.pad(lr, (0, wp - w, 0, hp - h), mode="replicate")
    s, th, tw = scale, plan.tile_h, plan.tile_w
    out = np.empty((h * s, w * s, c), dtype=out_dtype)
    band_h = th * s
    acc = torch.zeros(c, band_h, wp * s)  # weighted sum over the current band of tile rows
    wsum = torch.zeros(band_h, wp * s)
    band_top = 0  # HR row of acc[:, 0]
    ramp_len = plan.overlap * s
    done, total = 0, len(plan)

    def flush(upto: int) -> None:
        # HR rows [band_top, upto) are final: normalise, write out, shift the band up.
        nonlocal band_top
        n = upto - band_top
        if n <= 0:
            return
        keep = min(n, max(0, h * s - band_top))
        if keep:
            rows = acc[:, :keep, : w * s] / wsum[:keep, : w * s]
            out[band_top : band_top + keep] = _to_output(rows, out_dtype)
        acc[:, : band_h - n] = acc[:, n:].clone()
        acc[:, band_h - n :] = 0
        wsum[: band_h - n] = wsum[n:].clone()
        wsum[band_h - n :] = 0
        band_top = upto

    for y in plan.ys:
        flush(y * s)
        wy = ramp(th * s, ramp_len, rise=y > 0, fall=y + th < hp)
        for x in plan.xs:
            tile_lr = lr[:, :, y : y + th, x : x + tw]
            hr = fn(tile_lr, (y, x)) if with_origin else fn(tile_lr)
            if hr.shape[-2:] != (th * s, tw * s):
                raise RuntimeError(f"tile function returned {tuple(hr.shape)} for a {th}x{tw} tile "
                                   f"(expected x{s}: {th * s}x{tw * s})")
            hr = hr[0].detach().to("cpu", torch.float32)  # (C, th*s, tw*s)
            wx = ramp(tw * s, ramp_len, rise=x > 0, fall=x + tw < wp)
            weight = wy[:, None] * wx[None, :]  # (th*s, tw*s)
            top = y * s - band_top
            acc[:, top : top + th * s, x * s : (x + tw) * s] += hr * weight
            wsum[top : top + th * s, x * s : (x + tw) * s] += weight
            done += 1
            if progress:
                progress(done, total)
    flush(band_top + band_h)
    return out, plan


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def tiled_apply_with_retry(fn: TileFn, lr: torch.Tensor, scale: int, tile: int, overlap: int, grid: int,
                           device: torch.device, out_dtype: np.dtype = np.float32,
                           progress: Progress | None = None,
                           on_retry: Callable[[int, int], None] | None = None,
                           balance: bool = False, align: int | None = None,
                           with_origin: bool = False) -> tuple[np.ndarray, TilePlan]:
    """:func:`tiled_apply`, halving the tile on out-of-memory. Returns (output, the plan it used in the end)."""
    min_tile = 4 * grid
    while True:
        try:
            return tiled_apply(fn, lr, scale, tile, overlap, grid, out_dtype, progress, balance, align, with_origin)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled; everything else re-raises
            if not is_out_of_memory(exc) or tile <= min_tile:
                raise
        release_memory(device)
        smaller = max(min_tile, round_down(tile // 2, grid))
        if on_retry:
            on_retry(tile, smaller)
        tile = smaller


def free_memory_bytes(device: torch.device) -> int:
    """Memory available for one more tile on ``device`` (bytes)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo") as fp:
            for line in fp:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30  # an unknown platform: assume a modest 2 GiB


def measure_bytes_per_pixel(fn: TileFn, device: torch.device, grid: int,
                            module: torch.nn.Module | None = None, channels: int = 3) -> float:
    """Peak working memory of ``fn`` per LR pixel, measured on a small probe tile."""
    side = round_up(32, grid)
    probe = torch.rand(1, channels, side, side, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(probe)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return 1.5 * peak / side**2
    # CPU/MPS have no peak counter: take the largest tensor any module produces and allow a
    # few of them alive at once (residual stream, attention/MLP temporaries, output).
    biggest = [probe.numel() * probe.element_size()]

    def hook(_module, _inputs, output):
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        size = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
        biggest[0] = max(biggest[0], size)

    handles = [m.register_forward_hook(hook) for m in module.modules()] if module is not None else []
    try:
        out = fn(probe)
        biggest[0] = max(biggest[0], out.numel() * out.element_size())
    finally:
        for h in handles:
            h.remove()
    return 6.0 * biggest[0] / side**2


def auto_tile(bytes_per_pixel: float, free_bytes: int, device: torch.device, grid: int,
              image_side: int, windowed: bool = False, align: int | None = None) -> int:
    """Largest square tile on the grid whose estimated peak fits the device's memory budget.

    ``grid``: the tile's granularity in LR pixels (a token, or a whole attention window for a
    windowed model); ``align``: LR pixels per token (default ``grid``), the unit of the caps;
    ``windowed``: the model's attention is windowed, so the larger per-device cap applies."""
    budget = free_bytes * MEMORY_FRACTION.get(device.type, 0.5)
    side = int(math.sqrt(max(budget, 0) / max(bytes_per_pixel, 1e-9)))
    caps = AUTO_MAX_TOKENS_WINDOWED if windowed else AUTO_MAX_TOKENS
    cap = min(caps.get(device.type, 64) * (align or grid), round_up(image_side, grid))
    return max(4 * grid, min(round_down(side, grid), round_down(cap, grid) or grid))
