"""Exponential moving average of the trained weights; the exported model carries the EMA, not the last step.

Only the parameters a stage trains (``requires_grad``) get a shadow copy: frozen parts inside a trained module
(a LoRA'd VFM backbone, the frozen codebooks of the decoder stage) equal their live values, so averaging them
would cost their memory and an update per step for nothing. The decay ramps up as min(decay, (1 + n) / (10 + n))
after n updates (the warm-up of TensorFlow's ExponentialMovingAverage with num_updates), so a short run's EMA is
not dominated by its random init; the first update copies the weights (as torch's AveragedModel does).

- VQ codebooks change discontinuously (k-means init, dead-code restarts: train/codebook.py); averaging a
  restarted code with its dead predecessor would give a code no encoder output is near, so such rows are copied
  instead (`copy_rows`, `reset`).
- checkpoint/ema.safetensors holds the averages under their model.state_dict() names, with the update count in
  its metadata.
- Export swaps the averages into the live model (`swapped_in`), so the exported file is written by the same
  save_model from the same model object."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def warmup_ema_fn(decay: float):
    """An in-place EMA of lists of tensors with the warm-up decay, in AveragedModel's `multi_avg_fn` form."""

    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return ema_update


class EMA:
    """Shadow copies of the trained parameters of `trained` (name -> module); `prefixes` gives each name's
    model.state_dict() prefix, which with the parameter's own name is its checkpoint name."""

    def __init__(self, trained: dict[str, nn.Module], prefixes: dict[str, str], decay: float):
        self.decay = decay
        self.updates = 0
        self._lerp = warmup_ema_fn(decay)
        # checkpoint name -> (live parameter, its average)
        self.pairs: dict[str, tuple[nn.Parameter, torch.Tensor]] = {}
        seen: set[int] = set()
        for mod, module in trained.items():
            for name, p in module.named_parameters():
                if p.requires_grad and id(p) not in seen:  # a module shared by two entries is averaged once
                    seen.add(id(p))
                    self.pairs[prefixes[mod] + name] = (p, p.detach().clone())
        # foreach kernels want one device and dtype per list
        self._groups: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for live, avg in self.pairs.values():
            lives, avgs = self._groups.setdefault((live.device, live.dtype), ([], []))
            lives.append(live)
            avgs.append(avg)

    @torch.no_grad()
    def update(self) -> None:
        for lives, avgs in self._groups.values():
            current = [p.detach() for p in lives]
            if self.updates == 0:
                torch._foreach_copy_(avgs, current)
            else:
                self._lerp(avgs, current, self.updates)
        self.updates += 1

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
        self.updates = int(updates)
