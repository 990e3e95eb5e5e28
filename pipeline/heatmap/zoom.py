"""Crop refinement (`crop.enabled`): a second pass of the same model on the garment's box.

On real photos the garment often fills a small part of the frame (its keypoint box covers a
median 29 % of the image, under 10 % in a tenth of the photos), so at a CPU-sized input the
garment spans few heatmap cells. With crops on, the run's image cache is larger than the model
input (`crop.source_size`, e.g. 256 for a 128 input) and every model input is cut from it:

* pass 1 sees the whole image (the letterbox of `model.input_size`, as without crops);
* its keypoints give a square box (their extent, grown by `crop.margin` on each side, at least
  `crop.min_side` of the image's longer side), and pass 2 sees that box at the same input size,
  i.e. at up to source_size / input_size times pass 1's resolution. Pass 2's keypoints are the
  prediction; with `predict.crop_passes` N > 1, N box passes run, each on the box of the keypoints
  before it, and the prediction is the mean of their keypoints (two views of the garment, one
  more forward each; training's monitored validation keeps one box pass).

Training shows the model both views: a `crop.train_fraction` of the samples are cut around the
ground-truth box (its margin drawn in [0.5, 1.5] × crop.margin, so the model meets boxes as loose
or tight as pass 1's), the rest are whole images; the usual augmentation applies to either.

Frames. A letterbox and a box crop are both axis-aligned maps of original pixels into an input,
`input = (orig + 0.5) * scale - 0.5 + offset` (codec's convention), held as params (N, 4) =
scale_x, scale_y, offset_x, offset_y. So a crop is an image with other params: everything that
maps predictions back to original pixels (codec.cells_to_original) works unchanged, and cutting
a crop from the cache is one affine warp from the cache's params to the crop's (frame_matrix).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from pipeline.heatmap import codec


def box_params(xy: np.ndarray, valid: np.ndarray, size: int, margin: float, min_side: np.ndarray,
               fallback: np.ndarray) -> np.ndarray:
    """Params (N, 4) mapping a square box around each image's points onto a size×size input.

    xy: (N, K, 2) original pixels; valid: (N, K) bool (points that define the box); margin: the
    box side grows by margin × side on each side; min_side: (N,) smallest side in original pixels.
    The box is centred on the points' extent. Images without a valid point get `fallback` (N, 4).
    """
    xy = np.asarray(xy, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    big = np.where(valid[..., None], xy, np.inf)
    lo = big.min(1)                                            # (N, 2)
    hi = np.where(valid[..., None], xy, -np.inf).max(1)
    has = valid.any(1)
    lo, hi = np.where(has[:, None], lo, 0.0), np.where(has[:, None], hi, 0.0)
    centre = (lo + hi) / 2.0
    side = np.maximum((hi - lo).max(1) * (1.0 + 2.0 * np.asarray(margin, dtype=np.float64)),
                      np.asarray(min_side, dtype=np.float64))
    scale = size / np.maximum(side, 1e-6)
    offset = size / 2.0 - (centre + 0.5) * scale[:, None]      # box centre → input centre (size-1)/2
    params = np.concatenate([scale[:, None], scale[:, None], offset], axis=1)
    return np.where(has[:, None], params, np.asarray(fallback, dtype=np.float64))


def frame_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(..., 2, 3) affines taking input pixels of params `src` to input pixels of params `dst`
    (both (..., 4), of the same original image): x_dst = (x_src - o_src + 0.5)·s_dst/s_src - 0.5 + o_dst."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    a = dst[..., :2] / src[..., :2]
    b = (0.5 - src[..., 2:]) * a - 0.5 + dst[..., 2:]
    out = np.zeros(src.shape[:-1] + (2, 3))
    out[..., 0, 0], out[..., 1, 1] = a[..., 0], a[..., 1]
    out[..., :, 2] = b
    return out


def warp(images: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Cache images (N, S, S, 3) uint8 warped by (N, 2, 3) affines into (N, size, size, 3), zero
    border (codec.warp_images)."""
    return codec.warp_images(images, matrices, size)


def min_sides(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) smallest box side in original pixels: `fraction` of each image's longer side; sizes (N, 2)."""
    return fraction * np.asarray(sizes, dtype=np.float64).max(1)


def two_pass(predict: Callable[[np.ndarray, np.ndarray], Dict[str, np.ndarray]], images: np.ndarray,
             cache_params: np.ndarray, full_params: np.ndarray, sizes: np.ndarray, crop, size: int,
             valid: Optional[np.ndarray] = None, passes: int = 1) -> Dict[str, np.ndarray]:
    """Keypoints by the whole-image pass and then `passes` box passes, each on the box of the
    keypoints before it (`predict.crop_passes`).

    predict(inputs (N, size, size, 3) uint8, params (N, 4)) → dict with `xy` (N, K, 2) original
    pixels (e.g. predict.predict_images). images: (N, S, S, 3) cache images with params
    `cache_params` (N, 4); full_params: (N, 4) the whole-image letterbox at `size`; sizes: (N, 2)
    original width, height; crop: the CropConfig; valid: (N, K) bool of the channels that define
    the box (default all; a joint model's other categories are left out).
    Returns the last box pass's dict whose `xy` is the mean of the box passes' keypoints (original
    pixels; one pass: its own), plus `xy_pass1` (N, K, 2, the whole image), `crop_params` (N, 4,
    the last box: the frame of its other outputs, e.g. heatmaps) and, with passes > 1, `xy_box1`
    (the first box pass alone, what passes = 1 predicts).
    """
    first = predict(warp(images, frame_matrix(cache_params, full_params), size), full_params)
    if not len(images):
        return {**first, "xy_pass1": first["xy"], "crop_params": full_params}
    mask = np.ones(first["xy"].shape[:2], bool) if valid is None else np.asarray(valid, bool)
    min_side = min_sides(sizes, crop.min_side)
    box_xy, last = [], first
    for _ in range(max(1, passes)):
        boxes = box_params(last["xy"], mask, size, crop.margin, min_side, full_params)
        last = predict(warp(images, frame_matrix(cache_params, boxes), size), boxes)
        box_xy.append(last["xy"])
    out = dict(last)
    out["xy"] = np.mean(box_xy, axis=0)
    out["xy_pass1"] = first["xy"]
    out["crop_params"] = boxes
    if len(box_xy) > 1:
        out["xy_box1"] = box_xy[0]
    return out


def training_view(rng: np.random.Generator, orig_xy: np.ndarray, valid: np.ndarray, full_params: np.ndarray,
                  image_size: np.ndarray, crop, size: int) -> np.ndarray:
    """Params (4,) of one training sample's view: with probability crop.train_fraction the box
    around its ground-truth points (orig_xy (K, 2) original pixels, valid (K,) bool) at a margin
    drawn in [0.5, 1.5] × crop.margin, else the whole image (`full_params` (4,))."""
    if not valid.any() or rng.random() >= crop.train_fraction:
        return np.asarray(full_params, dtype=np.float64)
    margin = crop.margin * rng.uniform(0.5, 1.5)
    return box_params(orig_xy[None], valid[None], size, margin, min_sides(np.asarray(image_size)[None],
                                                                          crop.min_side), full_params[None])[0]
