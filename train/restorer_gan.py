"""The adversarial fine-tune of a restorer into a texture restorer (issue "Detail that looks real", lever 3: a GAN
on the image the low end of the dial shows), with the defences against the regular patterns a naive GAN draws:

- the generator cannot checkerboard at the start: ICNR-initialised pixel shuffle over a bicubic skip, fine-tuned
  from the faithful restorer (models/restorer.py), so the GAN only adds to a good image;
- Real-ESRGAN's U-Net discriminator with spectral norm (train/losses/discriminator.py): one logit per pixel;
- LDL's artefact-weighted pixel loss against the EMA network (train/losses/ldl.py);
- the discriminator sees each (output, photo) pair cut at a random offset of 0..`shift` px, the same for both
  (DiffAugment's translation, Zhao et al. 2020), so its stride-2 grid does not sit at one phase of the
  restorer's pixel-shuffle grid (measured: alone, it does not stop the pattern below; MODEL_CARD.md);
- a loss on the output's excess spectral power over the photo's at the frequencies of a 2 px and 4 px grid,
  at any offset (train/losses/grid.py);
- optionally the faithful restorer's two pixel-shuffle convs stay as they are (`freeze_upsampler`): every pattern
  above is a difference between sub-pixel phases, which those convs own;
- the EMA of the weights is what ships (train/restorer.py keeps it).

The generator-side loss is  pixel (L1, to the photo or the teacher) + ldl_weight * LDL + grid_weight * grid
+ adv_weight * GAN,
with the vanilla (non-saturating) GAN loss, as Real-ESRGAN. Real-ESRGAN also has a VGG perceptual loss, which
pushes towards sharp detail; no ImageNet weights can be had here, so instead the pixel loss may compare the two
images average-pooled by `pixel_pool` (`pool_for_pixel_loss`): it then holds colour and shape and leaves the
finest octave -- where the photo's detail is one of many and L1 asks for its blurred average -- to the
discriminator and LDL, which see the full resolution. The discriminator sees the photos as real, and takes
its own Adam step after each generator step (train/gan.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from .distributed import DistEnv
from .gan import Adversarial
from .losses.discriminator import Discriminator, DiscriminatorConfig
from .losses.grid import grid_loss
from .losses.ldl import ldl_loss


GAN_TERMS = ("g_adv", "ldl", "grid", "d_real", "d_fake")  # logged per step, in this order


@dataclass
class GanSettings:
    adv_weight: float = 0.1         # Real-ESRGAN's GAN weight
    ldl_weight: float = 1.0         # LDL's weight in its paper
    disc_channels: int = 32         # U-Net discriminator width (Real-ESRGAN: 64)
    d_learning_rate: float = 1e-4   # Real-ESRGAN's (the generator's rate is the run's learning_rate)
    d_betas: tuple[float, float] = (0.9, 0.99)  # Real-ESRGAN's; SAGAN's TTUR (Heusel et al. 2017): (0, 0.9)
    pixel_pool: int = 1             # the pixel loss compares average-pooled images (1: full resolution)
    shift: int = 8                  # the discriminator's input is cut at a random offset of 0..shift px
    grid_weight: float = 0.0        # weight of the loss on a pattern on the upsampler's grid (losses/grid.py)
    freeze_upsampler: bool = False  # keep the faithful restorer's pixel-shuffle convs: only LR features move
    kind: str = "vanilla"

    def __post_init__(self):
        if self.pixel_pool < 1 or self.disc_channels < 1 or self.shift < 0:
            raise ValueError(f"pixel_pool and disc_channels must be >= 1 and shift >= 0, got {self}")


def random_offset_crop(a: torch.Tensor, b: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b (same size) cut to (H - shift, W - shift) at one random offset (torch's generator)."""
    if shift == 0:
        return a, b
    dy, dx = (int(v) for v in torch.randint(0, shift + 1, (2,)))
    h, w = a.shape[-2] - shift, a.shape[-1] - shift
    return a[..., dy:dy + h, dx:dx + w], b[..., dy:dy + h, dx:dx + w]


def pool_for_pixel_loss(images: dict[str, torch.Tensor], pool: int) -> dict[str, torch.Tensor]:
    """Each (B, 3, H, W) image average-pooled by `pool` (a new dict either way)."""
    return dict(images) if pool == 1 else {k: F.avg_pool2d(v, pool) for k, v in images.items()}


class RestorerGan:
    """The discriminator, its optimizer and the adversarial + LDL terms of one restorer training step."""

    def __init__(self, settings: GanSettings, device: torch.device | str = "cpu"):
        self.settings = settings
        self.disc = Discriminator(DiscriminatorConfig(base_channels=settings.disc_channels)).train()
        self.disc = self.disc.to(device, memory_format=torch.channels_last)
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=settings.d_learning_rate,
                                      betas=tuple(settings.d_betas))
        self.adv = Adversarial(self.disc, self.d_opt, settings.adv_weight, settings.kind, DistEnv(), grad_clip=0.0)

    def generator_terms(self, pred: torch.Tensor, ema_pred: torch.Tensor, photo: torch.Tensor,
                        autocast) -> tuple[torch.Tensor, dict[str, float]]:
        """adv_weight * GAN(pred) + ldl_weight * LDL(pred) + grid_weight * grid(pred); keeps the (offset-cut)
        (pred, photo) for `discriminator_step`."""
        s = self.settings
        fake, real = random_offset_crop(pred, photo, s.shift)
        with autocast():
            adv = self.adv.generator_term(fake, real)
        ldl = ldl_loss(pred, ema_pred, photo)
        grid = grid_loss(pred, photo)
        total = s.adv_weight * adv.float() + s.ldl_weight * ldl + s.grid_weight * grid
        return total, {"g_adv": adv.item(), "ldl": ldl.item(), "grid": grid.item()}

    def discriminator_step(self, autocast) -> dict[str, float]:
        return self.adv.discriminator_step(autocast)

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The discriminator and its Adam state; its rate and betas stay this run's settings."""
        self.disc.load_state_dict(state["disc"])
        self.d_opt.load_state_dict(state["d_opt"])
        for group in self.d_opt.param_groups:
            group["lr"], group["betas"] = self.settings.d_learning_rate, tuple(self.settings.d_betas)

