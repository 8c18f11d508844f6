"""Exponential moving average of the trained weights; the exported model carries the EMA, not the last step.

The average itself is torch's `AveragedModel` over the modules a stage trains, with an EMA `multi_avg_fn` whose
decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates (the warm-up of TensorFlow's
ExponentialMovingAverage with num_updates), so a short run's EMA is not dominated by its random init.

This file stays as a thin wrapper for what AveragedModel does not do:
- VQ codebooks change discontinuously (k-means init, dead-code restarts: train/codebook.py); averaging a
  restarted code with its dead predecessor would give a code no encoder output is near, so such rows are copied
  instead (`copy_rows`, `reset`).
- The checkpoint keeps its layout: checkpoint/ema.safetensors holds the averaged *trained* parameters under their
  model.state_dict() names, with the update count in its metadata, so run folders written before this wrapper
  resume unchanged (frozen parameters inside a trained module, e.g. a LoRA'd VFM backbone, are equal to the
  live ones and not stored).
- Export swaps the averages into the live model (`swapped_in`), so the exported file is written by the same
  save_model from the same model object."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmup_ema_fn(decay: float):
    """AveragedModel multi_avg_fn: in-place EMA of the averaged parameters with the warm-up decay."""

    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return ema_update


class EMA:
    """AveragedModel of `trained` (name -> module); `prefixes` gives each name's model.state_dict() prefix."""

    def __init__(self, trained: dict[str, nn.Module], prefixes: dict[str, str], decay: float):
        self.decay = decay
        self.live = nn.ModuleDict(trained)
        self.avg = AveragedModel(self.live, multi_avg_fn=warmup_ema_fn(decay), use_buffers=False)
        # live parameter -> (averaged parameter, checkpoint name); only those that train
        self.pairs: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
        averaged = dict(self.avg.module.named_parameters())
        for name, p in self.live.named_parameters():
            if p.requires_grad:
                mod, rest = name.split(".", 1)
                self.pairs[prefixes[mod] + rest] = (p, averaged[name])

    @property
    def updates(self) -> int:
        return int(self.avg.n_averaged)

    def update(self) -> None:
        self.avg.update_parameters(self.live)

    @torch.no_grad()
    def copy_rows(self, name: str, rows: torch.Tensor) -> None:
        """Copy the rows `rows` (a mask over the leading dims) of parameter `name` from the live value."""
        if name in self.pairs and bool(rows.any()):
            live, avg = self.pairs[name]
            avg[rows] = live.detach()[rows]

    @torch.no_grad()
    def reset(self, name: str) -> None:
        """Forget the average of one parameter (after a re-initialisation such as k-means)."""
        if name in self.pairs:
            live, avg = self.pairs[name]
            avg.copy_(live.detach())

    @contextmanager
    def swapped_in(self):
        """Temporarily put the averages into the live parameters (exact swap)."""
        saved = {n: live.detach().clone() for n, (live, _) in self.pairs.items()}
        with torch.no_grad():
            for live, avg in self.pairs.values():
                live.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, (live, _) in self.pairs.items():
                    live.copy_(saved[n])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {n: avg.detach().cpu().contiguous() for n, (_, avg) in self.pairs.items()}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.pairs) - set(tensors))
        if missing:
            raise ValueError(f"EMA checkpoint lacks {missing[:3]}")
        for n, (_, avg) in self.pairs.items():
            avg.copy_(tensors[n])
        self.avg.n_averaged.fill_(updates)
