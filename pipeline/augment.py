"""Training augmentation in input pixels: rotation, scale, translation, flip, colour.

Geometric transforms are one 2×3 affine matrix applied to the image
(cv2.warpAffine) and to the keypoints alike. A horizontal flip also swaps the
left/right channels (the permutation comes from keypoints.category_flip_index),
so that channel `shoulder_left` keeps meaning "the garment's left shoulder"
after the mirror. Keypoints pushed outside the input are reported invalid.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np


def flip_matrix(size: int) -> np.ndarray:
    """(3, 3) affine of a horizontal flip of a size-wide input: x → size-1-x."""
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def random_affine(rng: np.random.Generator, size: int, rotation: float, scale_min: float,
                  scale_max: float, translate: float, flip_prob: float) -> Tuple[np.ndarray, bool]:
    """Draw a random (2, 3) affine about the input centre, and whether it flips."""
    angle = rng.uniform(-rotation, rotation)
    scale = rng.uniform(scale_min, scale_max)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    m = np.vstack([cv2.getRotationMatrix2D(centre, angle, scale), [0, 0, 1]])
    m[:2, 2] += rng.uniform(-translate, translate, size=2) * size
    flip = bool(rng.random() < flip_prob)
    if flip:
        m = m @ flip_matrix(size)
    return m[:2], flip


def transform_points(xy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (..., 2)."""
    return xy @ matrix[:, :2].T + matrix[:, 2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine `outer` ∘ `inner` (inner applied first)."""
    outer, inner = np.asarray(outer, dtype=np.float64), np.asarray(inner, dtype=np.float64)
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], 1)


def apply_geometry(image: np.ndarray, xy: np.ndarray, valid: np.ndarray, matrix: np.ndarray, flip: bool,
                   flip_index: Sequence[int], image_matrix: np.ndarray = None,
                   size: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp image (S, S, 3) and keypoints (K, 2) input pixels by `matrix`.

    valid: (K,) bool of points that exist. With `flip`, channel k of the result
    is channel flip_index[k] of the source. Points that land outside the input
    become invalid. Returns (image, xy, valid).
    image_matrix / size (crops, pipeline/heatmap/zoom.py): the image is a larger cache image, warped by
    `image_matrix` (default `matrix`) into a size×size input (default its own side) while the
    points, already in that input's frame, move by `matrix`.
    """
    size = size or image.shape[0]
    out = cv2.warpAffine(image, matrix if image_matrix is None else image_matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    new_xy = transform_points(xy, matrix)
    new_valid = valid.copy()
    if flip:
        order = np.asarray(flip_index)
        new_xy, new_valid = new_xy[order], new_valid[order]
    inside = (new_xy >= -0.5).all(-1) & (new_xy <= size - 0.5).all(-1)
    return out, new_xy, new_valid & inside


def color_jitter(rng: np.random.Generator, image: np.ndarray, amount: float) -> np.ndarray:
    """Random brightness, contrast and saturation in [1-amount, 1+amount]; uint8 in and out."""
    if amount <= 0:
        return image
    b, c, s = rng.uniform(1 - amount, 1 + amount, size=3)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # saturation: blend with the grey image (cv2 saturates to uint8)
    img = cv2.addWeighted(image, s, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), 1 - s, 0)
    # contrast about the mean, then brightness: out = c*img + (b - c)*mean
    mean = float(gray.mean())
    return cv2.convertScaleAbs(img, alpha=c, beta=(b - c) * mean)


def flip_sample(image: np.ndarray, xy: np.ndarray, valid: np.ndarray,
                flip_index: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic horizontal flip of a sample (image (S, S, 3), xy (K, 2) input pixels)."""
    return apply_geometry(image, xy, valid, flip_matrix(image.shape[1])[:2], True, flip_index)
