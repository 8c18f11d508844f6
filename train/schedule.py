"""Learning-rate schedule of a stage (Table 6 gives the peaks): linear warm-up, then constant or cosine down to
min_ratio x peak at the last step. The discriminator follows the same shape from the step its GAN term starts."""
from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def set_peaks(opt: torch.optim.Optimizer) -> None:
    """Remember each param group's peak rate (param_groups may scale some, e.g. the codebook's 10x); the key
    is the one checkpoints of earlier versions hold in their optimizer state."""
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]


def apply(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
