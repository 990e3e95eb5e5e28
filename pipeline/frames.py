"""Coordinate frames shared by every stage: original image pixels ↔ letterboxed input pixels.

A letterbox transform is `params = (scale, pad_x, pad_y)`: input = orig * scale + pad.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

# --------------------------------------------------------------------------- frames


def letterbox_params(width: int, height: int, size: int, margin: int = 0) -> np.ndarray:
    """Transform of an image of (width, height) into a size×size letterbox.

    The image is fitted inside the square less `margin` pixels on every side
    (a border keeps keypoints at the image edge away from the heatmap edge,
    where Gaussians are truncated and sub-pixel decoding cannot see both sides).
    Returns float64 (4,): scale_x, scale_y, offset_x, offset_y such that the
    image resized to (round(width*s), round(height*s)) with
    s = (size - 2*margin)/max(w, h) is pasted at integer (offset_x, offset_y).
    """
    inner = size - 2 * margin
    if inner < 1:
        raise ValueError(f"margin {margin} leaves no room in a {size}-pixel input")
    s = inner / max(width, height)
    new_w = min(inner, max(1, int(round(width * s))))
    new_h = min(inner, max(1, int(round(height * s))))
    return np.array([new_w / width, new_h / height, margin + (inner - new_w) // 2, margin + (inner - new_h) // 2],
                    dtype=np.float64)


def resized_shape(params: np.ndarray, width: int, height: int) -> Tuple[int, int]:
    """(new_w, new_h) of the resized image inside the letterbox."""
    return int(round(width * params[0])), int(round(height * params[1]))


def orig_to_input(xy: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Original pixels → input pixels. xy: (..., 2); params: (..., 4) broadcastable against xy."""
    params = np.asarray(params, dtype=np.float64)
    scale, offset = params[..., :2], params[..., 2:]
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5 + offset


def input_to_orig(xy: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Input pixels → original pixels (inverse of orig_to_input)."""
    params = np.asarray(params, dtype=np.float64)
    scale, offset = params[..., :2], params[..., 2:]
    return (np.asarray(xy, dtype=np.float64) - offset + 0.5) / scale - 0.5


def letterbox_table(sizes: np.ndarray, size: int, margin: int) -> np.ndarray:
    """Letterbox transforms (N, 4) of images of sizes (N, 2) for an S=size input with `margin`."""
    return np.array([letterbox_params(int(w), int(h), size, margin) for w, h in sizes],
                    np.float64).reshape(-1, 4)
