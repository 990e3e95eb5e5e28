"""Learning-rate schedules and run progress (steps or time budget).
"""
from __future__ import annotations

import math


def scheduled_lr(progress: float, peak: float, floor: float, kind: str, warmup: float = 0.0) -> float:
    """Learning rate of a decaying schedule at `progress` ∈ [0, 1] of the run.

    A linear ramp from `floor` to `peak` over the first `warmup` fraction, then
    `kind` "cosine" (half a cosine) or "linear" from `peak` down to `floor` at 1.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return floor + (peak - floor) * progress / warmup
    rest = (progress - warmup) / (1.0 - warmup)
    shape = 0.5 * (1.0 + math.cos(math.pi * rest)) if kind == "cosine" else 1.0 - rest
    return floor + (peak - floor) * shape


def run_progress(steps_done: int, total_steps: int, seconds: float, budget: float) -> float:
    """Fraction of the run done: steps over the epochs' steps, or seconds over the time budget
    (`budget` 0: none), whichever is further along; a time-capped run decays by the clock."""
    by_steps = steps_done / max(total_steps, 1)
    return max(by_steps, seconds / budget) if budget else by_steps
