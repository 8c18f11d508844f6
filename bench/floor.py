"""The "CNN floor": a compact plain CNN trained for minutes inside ``hitok eval``, the least a learned x4 model does.

From the issue: "9 convolutions of 48 channels at LR resolution, pixel-shuffle x4, bicubic skip; 0.17 M
parameters, trained for 1000 steps (batch 16, 32x32 LR crops from 200 random crops of the training photos,
L1 against the ground truth)". The layout is ESPCN's (Shi et al., CVPR 2016: all convolutions at LR size,
one sub-pixel convolution at the end) with VDSR's global residual (Kim et al., CVPR 2016: learn only what
bicubic misses): 3x3 conv 3->48, 7 x 3x3 conv 48->48, each followed by a PReLU, 3x3 conv 48->3*16,
PixelShuffle(4), plus the bicubic-upsampled input (torch bicubic). 168,000 parameters.

Training data differs from the issue's in one way: the LR of each HR crop is made with the eval's own
``bicubic`` track (MATLAB ``imresize(hr, 1/4)``, 8-bit; :func:`hitok.bench.evaluate.make_lr`), not Pillow's
bicubic, so the floor is trained on exactly the degradation that track scores.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hitok.errors import UserError
from hitok.imageio import list_images, load_rgb8

SCALE = 4
WIDTH = 48
CONVS = 9


class FloorNet(nn.Module):
    """Plain x4 CNN: ``(B, 3, h, w)`` in [0, 1] -> ``(B, 3, 4h, 4w)``, a residual over bicubic."""

    def __init__(self, width: int = WIDTH, convs: int = CONVS, scale: int = SCALE):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.PReLU(width)]
        for _ in range(convs - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width)]
        # He init for PReLU (slope 0.25 at start). torch's default conv init shrinks the signal ~6x per layer
        # here, so after 8 layers the features were ~1e-3 of the input and 1000 steps barely moved the net
        # (+0.2 dB over bicubic on val; He init: +1.8 dB, MODEL_CARD.md "The CNN floor").
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)
        last = nn.Conv2d(width, 3 * scale * scale, 3, padding=1)
        # Zero start: the untrained net is exactly bicubic, so a short run can only add detail to it.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last, nn.PixelShuffle(scale))
        self.scale = scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return skip + self.body(lr)


class FloorMethod:
    """A trained :class:`FloorNet` as an eval method: ``(h, w, 3) uint8 -> (4h, 4w, 3) uint8`` on the CPU."""

    name = "CNN floor"

    def __init__(self, net: FloorNet, info: str):
        self.net = net.eval()
        self.info = info

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
        with torch.inference_mode():
            y = self.net(x)[0].clamp(0, 1)  # (3, 4h, 4w)
        return (y.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()


def crop_pool(train_dir: str | Path, count: int, side: int, seed: int) -> np.ndarray:
    """``count`` random ``side`` x ``side`` HR crops, (count, side, side, 3) uint8, from the photos under train_dir.

    Files are drawn with replacement; each drawn file is decoded once per round. Files that cannot be read
    or are smaller than ``side`` are left out and their crops drawn again from the others.
    """
    try:
        files = list_images(train_dir, recursive=True)
    except UserError as exc:
        raise UserError(f"--floor-data {exc}") from None
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    bad: set[int] = set()
    while len(crops) < count:
        good = [i for i in range(len(files)) if i not in bad]
        if not good:
            raise UserError(f"--floor-data {train_dir}: no readable photo of at least {side}x{side} px")
        picks = rng.choice(good, size=count - len(crops))
        for i in sorted(set(picks.tolist())):
            try:
                img = load_rgb8(files[i])
            except UserError:
                img = None
            if img is None or min(img.shape[:2]) < side:
                bad.add(i)
                continue
            for _ in range(int((picks == i).sum())):
                top = int(rng.integers(img.shape[0] - side + 1))
                left = int(rng.integers(img.shape[1] - side + 1))
                crops.append(img[top : top + side, left : left + side])
    return np.stack(crops)


def _augment(lr: torch.Tensor, hr: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample horizontal and vertical flips, one transpose per batch (crops are square)."""
    b = lr.shape[0]
    for dim in (-1, -2):
        flip = torch.rand(b, generator=gen) < 0.5
        lr = torch.where(flip[:, None, None, None], lr.flip(dim), lr)
        hr = torch.where(flip[:, None, None, None], hr.flip(dim), hr)
    if torch.rand(1, generator=gen).item() < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr, hr


def train_floor(train_dir: str | Path, steps: int = 1000, batch: int = 16, lr_crop: int = 32, pool: int = 200,
                seed: int = 0, threads: int | None = None,
                log: Callable[[str], None] | None = None) -> FloorMethod:
    """Train the CNN floor on ``pool`` random crops of the photos in ``train_dir``; return it as an eval method.

    Each crop is ``4 * lr_crop`` HR px (128 for the issue's 32 px LR crops); its LR is the eval's bicubic
    track. Adam at a constant 5e-4 (a cosine decay over 1000 steps stops the net just as it starts to learn),
    L1 on [0, 1] pixels; seeded throughout.
    threads: torch threads for the training (restored after); None = torch's current setting.
    """
    from .evaluate import make_lr  # evaluate imports this module lazily; the LR must be the bicubic track's

    log = log or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        hr8 = crop_pool(train_dir, pool, SCALE * lr_crop, seed)  # (pool, 4c, 4c, 3)
        lr8 = np.stack([make_lr(h, "bicubic", seed) for h in hr8])  # (pool, c, c, 3)
        hr_all = torch.from_numpy(hr8).permute(0, 3, 1, 2).float() / 255.0  # (pool, 3, 4c, 4c)
        lr_all = torch.from_numpy(lr8).permute(0, 3, 1, 2).float() / 255.0  # (pool, 3, c, c)
        log(f"CNN floor: {pool} crops of {SCALE * lr_crop} px from {train_dir} in {time.perf_counter() - start:.1f} s")

        with torch.random.fork_rng(devices=[]):  # seeded init without moving the caller's global RNG
            torch.manual_seed(seed)
            net = FloorNet()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        params = sum(p.numel() for p in net.parameters())
        every = max(1, steps // 10)
        running = 0.0
        net.train()
        for step in range(1, steps + 1):
            idx = torch.randint(pool, (batch,), generator=gen)
            lr, hr = _augment(lr_all[idx], hr_all[idx], gen)
            loss = (net(lr) - hr).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            if step % every == 0 or step == steps:
                n = every if step % every == 0 else step % every
                log(f"CNN floor: step {step}/{steps}  L1 {running / n:.4f}  {time.perf_counter() - start:.0f} s")
                running = 0.0
        seconds = time.perf_counter() - start
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"CNN floor training diverged (L1 {loss.item()})")
        info = (f"CNN floor: plain CNN, {CONVS} convs x {WIDTH} ch at LR size + pixel shuffle x4 + bicubic skip, "
                f"{params / 1e6:.3f} M params; trained here for {steps} steps (batch {batch}, {lr_crop} px LR "
                f"crops, {pool} random crops of {train_dir}, LR = bicubic track, L1, Adam 5e-4) in "
                f"{seconds:.0f} s on the CPU, torch threads {torch.get_num_threads()}")
        return FloorMethod(net, info)
    finally:
        torch.set_num_threads(old_threads)
