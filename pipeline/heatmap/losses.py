"""Heatmap losses (MSE / softmax cross-entropy per keypoint, OHKM on the hardest keypoints).
"""
from __future__ import annotations

from pipeline.names import LOSSES

# --------------------------------------------------------------------------- model + loss


def per_keypoint_loss(heatmaps, weights, beliefs, kind: str = "mse", target_scale: float = 1.0):
    """Weighted loss of every output and keypoint: (B, T, K) float32 (unsupervised points weigh 0).

    heatmaps: (B, h, w, K) Gaussian targets (peak 1); weights: (B, K); beliefs:
    (B, T, h, w, K). kind "mse": half the per-map sum of squared errors to the
    targets times `target_scale` (their peak height); "softmax_ce": cross-entropy
    between the target normalised to a distribution over cells and the (softmax)
    beliefs (the scale cancels).
    """
    from keras import ops

    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    beliefs = ops.cast(beliefs, "float32")
    target = ops.expand_dims(heatmaps, 1)
    if kind == "mse":
        per_map = 0.5 * ops.sum(ops.square(beliefs - target_scale * target), axis=(2, 3))   # (B, T, K)
    else:
        dist = target / ops.maximum(ops.sum(target, axis=(2, 3), keepdims=True), 1e-6)
        per_map = -ops.sum(dist * ops.log(beliefs + 1e-8), axis=(2, 3))
    return per_map * ops.expand_dims(weights, 1)


def heatmap_loss(heatmaps, weights, beliefs, kind: str = "mse", ohkm_topk: int = 0,
                 target_scale: float = 1.0):
    """Masked loss over all outputs (each supervised), a scalar.

    Without OHKM (ohkm_topk 0): the mean over B, T, K of `per_keypoint_loss`.
    With online hard keypoint mining (CPN's top-k loss, `train.ohkm_topk` = k > 0),
    the last output (the prediction) counts, per image, only its k largest
    keypoint losses: their sum / k replaces that output's mean over K; earlier
    (intermediate) outputs keep the plain mean. k is capped at K, so k >= K is the
    plain loss. Unsupervised points have loss 0 and so rank last.
    """
    from keras import ops

    per_map = per_keypoint_loss(heatmaps, weights, beliefs, kind, target_scale)   # (B, T, K)
    num_k = per_map.shape[-1]
    if not ohkm_topk or ohkm_topk >= num_k:
        return ops.mean(per_map)
    hardest, _ = ops.top_k(per_map[:, -1], ohkm_topk)                # (B, k)
    last = ops.sum(hardest, axis=-1) / ohkm_topk                    # (B,)
    earlier = ops.mean(per_map[:, :-1], axis=2)                     # (B, T-1)
    per_output = ops.concatenate([earlier, ops.expand_dims(last, 1)], axis=1)   # (B, T)
    return ops.mean(per_output)
