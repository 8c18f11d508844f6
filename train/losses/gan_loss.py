"""Adversarial losses for the GAN terms of HiTokSR (Eq. 6, Eq. 10, Sec. 3.3; Table 6).

Table 6 uses the hinge loss for the tokenizer and the vanilla loss for the generator and the
decoder fine-tuning. Both work on logits of any shape (per-pixel maps from the U-Net
discriminator included) and average over every element.

  hinge   (Lim & Ye 2017; Miyato et al. 2018):
      L_D = mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))       L_G = -mean(D(fake))
  vanilla (Goodfellow et al. 2014, non-saturating generator):
      L_D = BCE(D(real), 1) + BCE(D(fake), 0)                       L_G = BCE(D(fake), 1)
      with BCE on logits: BCE(l, 1) = softplus(-l), BCE(l, 0) = softplus(l).

The two discriminator terms are summed, not averaged (Real-ESRGAN back-propagates each with
weight 1). Callers detach the fake images for the D step; the GAN step itself belongs to the
training loop.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

GanKind = Literal["hinge", "vanilla"]


class DiscriminatorLoss(NamedTuple):
    loss: torch.Tensor  # real + fake, what the D step minimises
    real: torch.Tensor  # term on real samples (for logging)
    fake: torch.Tensor  # term on fake samples (for logging)


def _check(kind: str) -> None:
    if kind not in ("hinge", "vanilla"):
        raise ValueError(f"GAN loss kind must be 'hinge' or 'vanilla', got '{kind}'")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanKind) -> DiscriminatorLoss:
    """Loss of D given its logits on real and (detached) fake samples."""
    _check(kind)
    if kind == "hinge":
        real = F.relu(1.0 - real_logits).mean()
        fake = F.relu(1.0 + fake_logits).mean()
    else:
        real = F.softplus(-real_logits).mean()  # = BCEWithLogits(real, 1), numerically stable
        fake = F.softplus(fake_logits).mean()  # = BCEWithLogits(fake, 0)
    return DiscriminatorLoss(loss=real + fake, real=real, fake=fake)


def generator_adv_loss(fake_logits: torch.Tensor, kind: GanKind) -> torch.Tensor:
    """Adversarial loss of the generator given D's logits on its (non-detached) output."""
    _check(kind)
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: BCEWithLogits(fake, 1)
