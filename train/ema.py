"""Exponential moving average of the trained weights; the exported model carries the EMA, not the last step.

The decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates (the warm-up of TensorFlow's
ExponentialMovingAverage with num_updates), so a short run's EMA is not dominated by its random init.
VQ codebooks change discontinuously (k-means init, dead-code restarts: train/stages.py); averaging a restarted
code with its dead predecessor would give a code no encoder output is near, so such rows are copied instead
(`copy_changed`)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copies of the parameters a stage trains, keyed by their model.state_dict() names."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.updates = 0
        self.params = dict(params)
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_changed(self, name: str, before: torch.Tensor) -> int:
        """Copy the rows (along the last dim) of parameter `name` that changed since `before` outside the
        optimizer (restarts, re-initialisation); returns how many rows were copied."""
        if name not in self.params:
            return 0
        live = self.params[name].detach()
        changed = (live != before).any(dim=-1)  # (..., rows)
        n = int(changed.sum())
        if n:
            self.shadow[name][changed] = live[changed]
        return n

    @torch.no_grad()
    def reset(self, name: str) -> None:
        """Forget the average of one parameter (after a re-initialisation such as k-means)."""
        if name in self.params:
            self.shadow[name].copy_(self.params[name].detach())

    @contextmanager
    def swapped_in(self):
        """Temporarily put the EMA values into the model's parameters (exact swap, no extra model copy)."""
        with torch.no_grad():
            for n, p in self.params.items():
                tmp = p.detach().clone()
                p.copy_(self.shadow[n])
                self.shadow[n] = tmp
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    tmp = p.detach().clone()
                    p.copy_(self.shadow[n])
                    self.shadow[n] = tmp

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().cpu().contiguous() for n, t in self.shadow.items()}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise ValueError(f"EMA checkpoint lacks {missing[:3]}")
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])
        self.updates = updates
