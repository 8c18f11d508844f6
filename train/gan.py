"""The adversarial part of a training step (Eq. 6, Eq. 10, Sec. 3.3; Table 6: hinge for the tokenizer, vanilla
after): the generator-side term on the stage's output, then the discriminator's own AdamW step on the same
(detached) fakes against the photos. Real-ESRGAN's U-Net discriminator (train/losses/discriminator.py).

The discriminator is frozen while the generator-side term is back-propagated (its gradient there is not its
own loss's), and is called outside its DDP wrapper for it, so DDP only ever sees the D step: one forward on
real and fake together per micro-batch (DDP allows one forward per backward), gradients synchronised on the
last micro-batch."""
from __future__ import annotations

import torch
from torch import nn

from . import distributed as ddp
from .losses.gan_loss import discriminator_loss, generator_adv_loss


class Adversarial:
    def __init__(self, disc: nn.Module, d_opt: torch.optim.Optimizer, weight: float, kind: str,
                 env: ddp.DistEnv, grad_clip: float):
        self.disc, self.d_opt, self.weight, self.kind = disc, d_opt, weight, kind
        self.grad_clip = grad_clip
        self.env = env
        self.wrapped = disc  # DistributedDataParallel(disc) from `wrap` on, once its state is final (resume)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def wrap(self) -> None:
        self.wrapped = ddp.wrap(self.disc, self.env)

    def generator_term(self, fake: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        """Unweighted generator-side adversarial loss of `fake`; keeps (fake, photo) for the D step."""
        self.disc.requires_grad_(False)
        adv = generator_adv_loss(self.disc(fake), self.kind)
        self.pending.append((fake.detach(), photo.detach()))
        return adv

    def discriminator_step(self, autocast) -> dict[str, float]:
        """One AdamW step of D over the micro-batches kept since the last call; returns its logged terms."""
        self.disc.requires_grad_(True)
        self.d_opt.zero_grad(set_to_none=True)
        terms: dict[str, list[float]] = {"d_loss": [], "d_real": [], "d_fake": []}
        n = len(self.pending)
        for i, (fake, photo) in enumerate(self.pending):
            with ddp.no_sync(self.wrapped, sync=i == n - 1):
                with autocast():
                    logits = self.wrapped(torch.cat([photo, fake]))  # (2B, 1, H, W): reals first
                    dl = discriminator_loss(*logits.chunk(2), self.kind)
                (dl.loss / n).backward()
            terms["d_loss"].append(dl.loss.item())
            terms["d_real"].append(dl.real.item())
            terms["d_fake"].append(dl.fake.item())
        self.pending.clear()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.grad_clip)
        self.d_opt.step()
        return {k: sum(v) / len(v) for k, v in terms.items() if v}
