"""The tokenizer stage's codebook updates outside the optimizer (Sec. 3.1 leaves them open; see train/stages.py):
k-means init on the first quantized batch and dead-code restarts, and what each must keep consistent around it.

- Replicas: init and restarts draw from the local batch, so rank 0's quantizer is broadcast after them; the
  usage statistics that decide restarts are averaged over processes every step.
- EMA (train/ema.py): after k-means init the codebook's average restarts from the new codes; restarted rows are
  copied into the average, not averaged with their dead predecessor.
- AdamW: a restarted row is a new code, so its moments (exp_avg, exp_avg_sq: built up while it was dead, and
  applied at the codebook's 10x learning rate) are zeroed; otherwise the first steps after a restart push the
  new code along its predecessor's stale direction."""
from __future__ import annotations

import torch

from . import distributed as ddp
from .ema import EMA

CODEBOOK = "tokenizer.quantizer.codebook"  # its model.state_dict() name (the EMA's key)


@torch.no_grad()
def reset_adam_rows(opt: torch.optim.Optimizer, param: torch.nn.Parameter, rows: torch.Tensor) -> None:
    """Zero Adam(W)'s first and second moments of `param`'s rows selected by the mask `rows`."""
    state = opt.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if key in state:
            state[key][rows] = 0


class CodebookKeeper:
    """Runs once per optimizer step of the tokenizer stage, after the optimizer step."""

    def __init__(self, stage, opt: torch.optim.Optimizer, ema: EMA, env: ddp.DistEnv):
        self.stage, self.opt, self.ema, self.env = stage, opt, ema, env
        self.q = stage.model.tokenizer.quantizer

    def before_step(self) -> None:
        self._was_initialized = bool(self.q.initialized)

    def after_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        q, env = self.q, self.env
        if not self._was_initialized and bool(q.initialized):  # k-means ran in this step's forward
            ddp.broadcast_module(q, env)
            self.ema.reset(CODEBOOK)
        ddp.average_float_buffers(q, env)
        before = q.codebook.detach().clone()
        restarted = self.stage.after_step(step, rng)
        if restarted:
            ddp.broadcast_module(q, env)
            rows = (q.codebook.detach() != before).any(dim=-1)  # (N, K) codes replaced on rank 0
            self.ema.copy_rows(CODEBOOK, rows)
            reset_adam_rows(self.opt, q.codebook, rows)
        return restarted
