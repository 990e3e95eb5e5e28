"""heatmap_loss: masking and the MSE target scale (pipeline/fit/trainer.py)."""
from __future__ import annotations

import numpy as np
import pytest


def _loss(*args, **kw):
    from keras import ops

    from pipeline.heatmap.losses import heatmap_loss

    return float(ops.convert_to_numpy(heatmap_loss(*args, **kw)))


def test_mse_target_scale_sets_the_peak_height():
    target = np.zeros((1, 4, 4, 2), np.float32)
    target[0, 1, 2, :] = 1.0
    weights = np.ones((1, 2), np.float32)
    beliefs = 10.0 * target[:, None]                      # (B, T=1, h, w, K): peaks of height 10
    assert _loss(target, weights, beliefs, "mse", target_scale=10.0) == pytest.approx(0.0)
    assert _loss(target, weights, beliefs, "mse", target_scale=1.0) == pytest.approx(0.5 * 81)  # (10 - 1)² / 2 per map
    zero = np.zeros_like(beliefs)
    assert _loss(target, weights, zero, "mse", target_scale=10.0) == pytest.approx(100 * _loss(target, weights, zero, "mse"))


def test_unsupervised_points_weigh_nothing():
    target = np.zeros((1, 4, 4, 2), np.float32)
    target[0, 0, 0, :] = 1.0
    beliefs = np.zeros((1, 1, 4, 4, 2), np.float32)
    beliefs[0, 0, 3, 3, 1] = 5.0                         # a wrong peak on point 1 only
    both = _loss(target, np.ones((1, 2), np.float32), beliefs, "mse")
    only_first = _loss(target, np.array([[1.0, 0.0]], np.float32), beliefs, "mse")
    assert only_first == pytest.approx(0.5 * 1 / 2) and both > only_first
