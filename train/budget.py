"""Time-budget runs (`--time-limit-min` without `--steps`, and every campaign stage): the step count is fixed once
the speed is known, 10% of the budget in, so the warm-up, the GAN start and the schedule are laid out over steps
the run will really make (train/loop.py applies the plan on every rank)."""
from __future__ import annotations


def plan_total(step: int, elapsed: float, time_limit: float, rate_start: tuple[int, float]) -> int | None:
    """Total optimizer steps that fit into `time_limit` seconds at the speed measured since `rate_start`
    (step, elapsed) — timing starts after the first step's one-off costs; None while it is too early to tell
    (under 10% of the budget, or fewer than 2 timed steps). 3% is kept back for the final checkpoint."""
    if elapsed < 0.1 * time_limit or step - rate_start[0] < 2:
        return None
    rate = (step - rate_start[0]) / max(elapsed - rate_start[1], 1e-6)
    return max(step + 1, step + int(rate * (time_limit - elapsed) * 0.97))
