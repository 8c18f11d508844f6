"""The faithful end of the fidelity dial: a residual CNN at LR resolution (EDSR-style, Lim et al., CVPRW 2017).

Measured on the shipped guided model (MODEL_CARD.md, "What the tokens add"): with an L1 objective the tokens
add <= 0.1 dB to the faithful image, while the token path is 95 % of the operations. So the faithful end skips
it: `fidelity = 1` is this network alone, `fidelity = 0` the paper's token-only decoder, and values between blend
the two images (as ESRGAN interpolates a PSNR-oriented and a GAN-trained network).

    x   = head(lr - 0.5)                         3x3 conv to `width` channels
    f   = x + tail(blocks(x))                    `blocks` residual blocks (conv-ReLU-conv, scaled by res_scale)
    out = bicubic_x4(lr) + up(f)                 up: conv -> pixel shuffle x2 -> ReLU -> conv -> pixel shuffle x2

With `grain` > 0 the last shuffle also gives `grain` feature maps at output resolution, and
    out += grain_out(relu(g + grain_scale * noise))   grain_out: 3x3 conv at output resolution, starting at 0
so a texture restorer can shape per-pixel noise into texture the LR cannot predict (models/noise.py) instead of
drawing a pattern on the shuffle's grid. With `body_noise`, x = head(lr - 0.5) + noise_scale * noise at LR
resolution (per channel, starting at 0; ESRGAN+, Rakotonirina & Rasoanaivo 2020): the 16 blocks can shape it.
With `noise_gate` that noise is also multiplied by relu(1 + 10 gate([head output, flatness])), gate a 1x1 conv starting
at 0 and flatness log2 of the LR luma's local standard deviation (5 x 5 px) over 4 grey levels, so the net can turn
the noise off where the picture is flat (measured without it: mottle on skies, MODEL_CARD.md); a conv on the head
output alone (linear in the LR) cannot measure flatness, so the statistic is given. With `noise_mask` T (grey levels)
the noise is also multiplied by a fixed s^2 / (s^2 + T^2), s the local standard deviation of the LR luma blurred by
1 px (`structure`, `flat_mask`; in fp32 under any autocast): no learning, and, unlike `flatness`, it reads a
compressed photo's flat sky as flat (the mottle of a texture restorer there was mostly its noise: MODEL_CARD.md,
"Eighth session").
`with_noise_inputs` adds either to a trained restorer without changing its output, so a faithful restorer and a texture
restorer fine-tuned from it still interpolate.

No normalisation and no global pooling (channel attention would make a tile's output depend on the whole
tile, so tiles would no longer agree where they are blended). The first pixel-shuffle conv starts ICNR-
initialised (Aitken et al. 2017: every sub-pixel of a shuffle group starts equal, so it cannot checkerboard);
the last conv starts small, so the untrained net is close to bicubic and a short run only adds to it.
"""
import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .noise import position_noise


@dataclass
class RestorerConfig:
    width: int = 64        # channels at LR resolution
    blocks: int = 16       # residual blocks
    res_scale: float = 0.2  # EDSR's residual scaling: each block starts as a small step from identity
    up_width: int = 32     # channels at 2x LR resolution (the first pixel-shuffle stage)
    grain: int = 0         # noise-fed feature maps at output resolution (0: none)
    body_noise: bool = False  # per-pixel noise added to the body's input at LR resolution (ESRGAN+)
    noise_gate: bool = False  # with body_noise: its amplitude per pixel and channel set by the picture
    noise_mask: float = 0.0  # with body_noise: grey levels of LR structure at which the noise is halved (0: none)

    def __post_init__(self):
        if self.width < 1 or self.blocks < 0 or self.up_width < 1 or self.grain < 0:
            raise ValueError(f"restorer width/up_width must be >= 1, blocks and grain >= 0, got {self}")
        if (self.noise_gate or self.noise_mask) and not self.body_noise:
            raise ValueError(f"a noise gate or mask needs body noise, got {self}")
        if self.noise_mask < 0:
            raise ValueError(f"noise_mask must be >= 0 grey levels, got {self}")

    @property
    def has_noise(self) -> bool:
        return bool(self.grain or self.body_noise)


class _Block(nn.Module):
    def __init__(self, ch: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on the convs' fresh outputs (no conv backward needs its output): the same numbers as
        # x + res_scale * conv2(relu(conv1(x))) with three fewer full-size tensors, 5 % of a CPU forward.
        return self.conv2(F.relu_(self.conv1(x))).mul_(self.res_scale).add_(x)


def _icnr_(conv: nn.Conv2d, factor: int) -> None:
    """Give the factor**2 outputs that one pixel shuffle group gathers the same initial kernel."""
    out_ch = conv.out_channels // (factor * factor)
    w = torch.empty(out_ch, conv.in_channels, *conv.kernel_size)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    with torch.no_grad():
        conv.weight.copy_(w.repeat_interleave(factor * factor, dim=0))  # (out_ch * f^2, in, k, k), shuffle order
        nn.init.zeros_(conv.bias)


# Adam moves a weight ~ its learning rate per step: with the gain a fine-tune's ~1000 steps at 1e-4 can take the
# gate from 1 (where it starts) to 0
GATE_GAIN = 10.0
FLAT_WINDOW = 5  # LR px: the window of the gate's flatness input


def _luma(lr: torch.Tensor) -> torch.Tensor:
    lr = lr.float()
    return 0.299 * lr[:, :1] + 0.587 * lr[:, 1:2] + 0.114 * lr[:, 2:3]


def _local_std(y: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 1, h, w) -> its standard deviation over `window` x `window` px around each pixel (edges replicated)."""
    pad = (window // 2,) * 4
    mean = F.avg_pool2d(F.pad(y, pad, mode="replicate"), window, 1)
    mean_sq = F.avg_pool2d(F.pad(y * y, pad, mode="replicate"), window, 1)
    return (mean_sq - mean * mean).clamp_min(0).sqrt()


def flatness(lr: torch.Tensor, window: int = FLAT_WINDOW) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> (B, 1, h, w): log2 of the luma's standard deviation over `window` x `window` px
    (edges replicated) in units of 4 grey levels, plus 1 grey level so a flat patch is about -2, not -inf."""
    return torch.log2((_local_std(_luma(lr), window) + 1 / 255) / (4 / 255))


MASK_BLUR = 1.0  # LR px: the Gaussian that averages out JPEG and sensor noise before `structure` measures
MASK_RADIUS = 3  # its taps each side (3 sigma)


def structure(lr: torch.Tensor, window: int = FLAT_WINDOW) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> (B, 1, h, w): the standard deviation, in grey levels, of the LR luma blurred by a
    Gaussian of MASK_BLUR px over `window` x `window` px (edges replicated). The blur is what `flatness` lacks: on a
    compressed photo's sky the LR's JPEG and sensor noise (~3-5 grey levels) reads as much as fine texture
    does; blurred, the noise falls ~3x and the picture's structure (edges, texture of 2+ LR px) stays."""
    with torch.autocast(lr.device.type, enabled=False):  # the variance of a few grey levels at a mean of ~0.5:
        return _structure(lr, window)                     # lost to bf16 / fp16 rounding (~1 grey level at 0.6)


def _structure(lr: torch.Tensor, window: int) -> torch.Tensor:
    y = _luma(lr)
    taps = torch.arange(-MASK_RADIUS, MASK_RADIUS + 1, dtype=y.dtype, device=y.device)
    k = torch.exp(-taps ** 2 / (2 * MASK_BLUR ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1)
    r = MASK_RADIUS
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k)  # separable: along rows, then columns
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.transpose(2, 3))
    return _local_std(y, window) * 255


def flat_mask(lr: torch.Tensor, level: float) -> torch.Tensor:
    """(B, 1, h, w) in [0, 1), float32: s^2 / (s^2 + level^2), s = `structure(lr)`: ~0 where the LR is flat once
    its noise is averaged out, ~1 on edges and texture, 1/2 at `level` (> 0) grey levels."""
    if level <= 0:
        raise ValueError(f"a flat mask's level must be > 0 grey levels, got {level}")
    s2 = structure(lr).square()
    return s2 / (s2 + level * level)


class Restorer(nn.Module):
    """lr (B, 3, h, w) in [0, 1] -> (B, 3, 4h, 4w), unclamped (the caller clamps)."""

    scale = 4

    def __init__(self, cfg: RestorerConfig):
        super().__init__()
        self.config = cfg
        c, u = cfg.width, cfg.up_width
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[_Block(c, cfg.res_scale) for _ in range(cfg.blocks)])
        self.tail = nn.Conv2d(c, c, 3, padding=1)
        self.up1 = nn.Conv2d(c, u * 4, 3, padding=1)
        self.up2 = nn.Conv2d(u, (3 + cfg.grain) * 4, 3, padding=1)
        _icnr_(self.up1, 2)
        with torch.no_grad():
            self.up2.weight.mul_(0.1)
            self.up2.bias.zero_()
        if cfg.body_noise:
            self.noise_scale = nn.Parameter(torch.zeros(c))
        if cfg.body_noise and cfg.noise_gate:
            self.noise_gate = nn.Conv2d(c + 1, c, 1)
            nn.init.zeros_(self.noise_gate.weight)
            nn.init.zeros_(self.noise_gate.bias)
        if cfg.grain:
            self.grain_scale = nn.Parameter(torch.ones(cfg.grain))
            self.grain_out = nn.Conv2d(cfg.grain, 3, 3, padding=1)
            nn.init.zeros_(self.grain_out.weight)
            nn.init.zeros_(self.grain_out.bias)

    def _noise(self, like: torch.Tensor, top: int, left: int, stream: int) -> torch.Tensor:
        """Fresh Gaussian noise in training; at inference Gaussian noise fixed by picture position
        (models/noise.py), the same on every run and in every tile."""
        if self.training:
            return torch.randn_like(like)
        return position_noise(like.shape[1], like.shape[2], like.shape[3], top, left, like.device, like.dtype,
                              stream)

    @property
    def reach(self) -> int:
        """LR pixels (one side) an input pixel can move the output by: head (or with a noise gate its flatness
        window, with a noise mask its blur and window), 2 convs per block, tail, up1, half of up2 (it runs at
        2x), plus the bicubic skip's two taps."""
        first = max(1, FLAT_WINDOW // 2) if self.config.noise_gate else 1
        if self.config.noise_mask:
            first = max(first, MASK_RADIUS + FLAT_WINDOW // 2)
        return first + 2 * self.config.blocks + 1 + 1 + 1 + 2

    def forward(self, lr: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """origin: where `lr` starts in the picture (LR pixels): the noise inputs' position (tiles agree)."""
        x = self.head(lr - 0.5)
        if self.config.body_noise:
            noise = self.noise_scale.view(1, -1, 1, 1).to(x.dtype) * self._noise(x, *origin, stream=0)
            if self.config.noise_gate:
                gate = self.noise_gate(torch.cat([x, flatness(lr).to(x.dtype)], 1))
                noise = noise * F.relu(1 + GATE_GAIN * gate)
            if self.config.noise_mask:
                noise = noise * flat_mask(lr, self.config.noise_mask).to(x.dtype)
            x = x + noise
        x = self.tail(self.body(x)).add_(x)
        x = F.pixel_shuffle(self.up1(x), 2)  # (B, up_width, 2h, 2w)
        x = F.pixel_shuffle(self.up2(F.relu_(x)), 2)  # (B, 3 + grain, 4h, 4w)
        if self.config.grain:
            x, g = x[:, :3], x[:, 3:]
            x = x + self.grain_out(F.relu(g + self.grain_scale.view(1, -1, 1, 1).to(g.dtype)
                                         * self._noise(g, self.scale * origin[0], self.scale * origin[1], stream=1)))
        skip = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return skip + x.to(skip.dtype)


def with_noise_inputs(restorer: Restorer, grain: int = 0, body_noise: bool = False, noise_scale: float = 0.0,
                      seed: int = 0, noise_gate: bool = False, noise_mask: float = 0.0) -> Restorer:
    """A copy of a trained restorer (without noise inputs) with `grain` noise-fed maps and / or body noise added:
    the new rows of the last conv start small and random, the grain's output conv at zero and the body noise's
    scales at `noise_scale` — at 0 the output is the same (the faithful end of a dial), but a noise input at
    zero is a saddle for training (any loss's first-order change from adding zero-mean noise is zero), so a
    texture restorer's run starts it above."""
    if restorer.config.has_noise:
        raise ValueError(f"the restorer already has noise inputs ({restorer.config})")
    with torch.random.fork_rng(devices=[]):  # the new rows' draw leaves the caller's random state alone
        torch.manual_seed(seed)
        out = Restorer(replace(restorer.config, grain=grain, body_noise=body_noise, noise_gate=noise_gate,
                               noise_mask=noise_mask))
    state = restorer.state_dict()
    for name in ("weight", "bias"):  # up2's first 12 rows: the 3 colour channels' 4 sub-pixels (shuffle order)
        new = getattr(out.up2, name).detach().clone()
        new[: 3 * 4] = state[f"up2.{name}"]
        state[f"up2.{name}"] = new
    out.load_state_dict(state | {k: v for k, v in out.state_dict().items() if k.startswith(("grain_", "noise_"))})
    if body_noise:
        with torch.no_grad():
            out.noise_scale.fill_(noise_scale)
    return out.to(next(restorer.parameters()).device)


def retuned_noise(restorer: Restorer, mask: float | None = None, gain: float = 1.0) -> Restorer:
    """A copy of a restorer with body noise whose noise is masked at `mask` grey levels (`flat_mask`; None: as
    it is, 0: no mask) and whose noise scales are `gain` times theirs: neither is a weight the blocks were
    trained to match exactly, so a texture restorer trained without a mask can be given one at attach time
    (MODEL_CARD.md, "Eighth session")."""
    if not restorer.config.body_noise:
        raise ValueError(f"the restorer has no body noise to retune ({restorer.config})")
    if gain < 0:
        raise ValueError(f"noise gain must be >= 0, got {gain}")
    out = copy.deepcopy(restorer)
    if mask is not None:
        out.config = replace(restorer.config, noise_mask=mask)  # validated by RestorerConfig
    with torch.no_grad():
        out.noise_scale.mul_(gain)
    return out
