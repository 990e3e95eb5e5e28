"""Heatmap loss and online hard keypoint mining (train.ohkm_topk), on hand-sized arrays."""
import numpy as np
import pytest

from pipeline.heatmap.losses import heatmap_loss


def tiny_batch():
    """B=2 images, T=2 outputs, 2×2 maps, K=3 keypoints; targets are zero, so the MSE of one map
    is half the sum of its squared beliefs: a single value v in one cell gives v²/2."""
    beliefs = np.zeros((2, 2, 2, 2, 3), np.float32)
    values = np.array([[[1.0, 2.0, 3.0], [4.0, 1.0, 2.0]],    # image 0: output 1, output 2 (last)
                       [[2.0, 2.0, 2.0], [1.0, 5.0, 3.0]]], np.float32)   # image 1
    beliefs[:, :, 0, 0, :] = values
    return np.zeros((2, 2, 2, 3), np.float32), beliefs, values ** 2 / 2


def value(x):
    from keras import ops

    return float(ops.convert_to_numpy(x))


def test_plain_loss_is_the_mean_of_weighted_keypoint_losses():
    targets, beliefs, per_kp = tiny_batch()
    weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)   # image 0's third point is unsupervised
    expected = (per_kp * weights[:, None]).mean()
    assert value(heatmap_loss(targets, weights, beliefs, "mse")) == pytest.approx(expected)


@pytest.mark.parametrize("k", [3, 5])
def test_ohkm_with_k_at_least_K_is_the_plain_loss(k):
    targets, beliefs, _ = tiny_batch()
    weights = np.ones((2, 3), np.float32)
    plain = value(heatmap_loss(targets, weights, beliefs, "mse"))
    assert value(heatmap_loss(targets, weights, beliefs, "mse", ohkm_topk=k)) == pytest.approx(plain)


def test_ohkm_keeps_the_k_largest_keypoint_losses_of_the_last_output():
    targets, beliefs, per_kp = tiny_batch()
    weights = np.ones((2, 3), np.float32)
    # last output: image 0 losses 8, 0.5, 2 → top-1 = 8, top-2 = 10; image 1: 0.5, 12.5, 4.5 → 12.5, 17
    # first output keeps its plain mean: image 0 (0.5+2+4.5)/3, image 1 (2+2+2)/3
    first = [(0.5 + 2 + 4.5) / 3, 6 / 3]
    np.testing.assert_allclose(per_kp[:, 1], [[8, 0.5, 2], [0.5, 12.5, 4.5]])
    top1 = np.mean([(first[0] + 8) / 2, (first[1] + 12.5) / 2])
    top2 = np.mean([(first[0] + 10 / 2) / 2, (first[1] + 17 / 2) / 2])
    assert value(heatmap_loss(targets, weights, beliefs, "mse", ohkm_topk=1)) == pytest.approx(top1)
    assert value(heatmap_loss(targets, weights, beliefs, "mse", ohkm_topk=2)) == pytest.approx(top2)
    # mining only raises the loss: it averages the hardest points instead of all
    assert top1 > top2 > value(heatmap_loss(targets, weights, beliefs, "mse"))


def test_ohkm_ranks_unsupervised_points_last():
    targets, beliefs, _ = tiny_batch()
    weights = np.ones((2, 3), np.float32)
    weights[1, 1] = 0  # image 1's hardest point (12.5) is not supervised: its top-1 becomes 4.5
    first = [(0.5 + 2 + 4.5) / 3, (2 + 0 + 2) / 3]
    expected = np.mean([(first[0] + 8) / 2, (first[1] + 4.5) / 2])
    assert value(heatmap_loss(targets, weights, beliefs, "mse", ohkm_topk=1)) == pytest.approx(expected)


def test_ohkm_with_softmax_ce_single_output():
    """T = 1 (simplebaseline): the whole loss is the mean over images of the top-k CE losses."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1, 3, 3, 4)).astype(np.float32)
    beliefs = np.exp(logits) / np.exp(logits).sum(axis=(2, 3), keepdims=True)
    targets = rng.uniform(0.1, 1.0, size=(2, 3, 3, 4)).astype(np.float32)
    dist = targets / targets.sum(axis=(1, 2), keepdims=True)
    ce = -(dist * np.log(beliefs[:, 0] + 1e-8)).sum(axis=(1, 2))   # (B, K)
    expected = np.mean(np.sort(ce, axis=1)[:, -2:].sum(axis=1) / 2)
    got = value(heatmap_loss(targets, np.ones((2, 4), np.float32), beliefs, "softmax_ce", ohkm_topk=2))
    assert got == pytest.approx(expected, rel=1e-5)
