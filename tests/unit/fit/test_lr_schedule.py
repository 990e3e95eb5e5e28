"""scheduled_lr and run_progress (pipeline/fit/schedule.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.fit.schedule import run_progress, scheduled_lr


def test_cosine_with_warmup_is_keras_cosine_decay():
    """The same curve as keras.optimizers.schedules.CosineDecay (kept for its cost per call:
    docs/decisions.md, "Libraries or our own code")."""
    import keras

    peak, floor, warmup, steps = 2e-3, 1e-5, 0.05, 2000
    theirs = keras.optimizers.schedules.CosineDecay(floor, int(steps * (1 - warmup)), alpha=floor / peak,
                                                    warmup_target=peak, warmup_steps=int(steps * warmup))
    at = np.arange(0, steps + 1, 25)
    ours = np.array([scheduled_lr(s / steps, peak, floor, "cosine", warmup) for s in at])
    np.testing.assert_allclose(ours, [float(theirs(int(s))) for s in at], rtol=1e-5)


def test_linear_ends_at_the_floor_and_progress_reads_the_clock():
    assert scheduled_lr(0.0, 1.0, 0.1, "linear") == pytest.approx(1.0)
    assert scheduled_lr(0.5, 1.0, 0.1, "linear") == pytest.approx(0.55)
    assert scheduled_lr(2.0, 1.0, 0.1, "linear") == pytest.approx(0.1)  # clipped past the end
    assert run_progress(10, 100, seconds=50, budget=100) == pytest.approx(0.5)  # the clock is further along
    assert run_progress(10, 100, seconds=50, budget=0) == pytest.approx(0.1)    # no budget: steps
