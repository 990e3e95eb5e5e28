"""Test-time flip augmentation: mirror inputs, flip predictions back, merge.

With the pixel-centre frames of `codec`, mirroring the input (x → S-1-x) is
exactly reversing heatmap columns (u → W-1-u), so flip-back needs no shift.
Channels are swapped with the category's flip permutation
(keypoints.category_flip_index).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def flip_images(images: np.ndarray) -> np.ndarray:
    """Mirror a batch of images (N, S, S, C) horizontally."""
    return images[:, :, ::-1]


def flip_back_heatmaps(heatmaps: np.ndarray, flip_index: Sequence[int]) -> np.ndarray:
    """Heatmaps (N, h, w, K) predicted on mirrored inputs → the original's frame and channels."""
    return heatmaps[:, :, ::-1][..., list(flip_index)]


def flip_back_cells(uv: np.ndarray, width: int, flip_index: Sequence[int]) -> np.ndarray:
    """Keypoints (N, K, 2) in cells of a mirrored heatmap of `width` → original frame and channels."""
    out = uv[:, list(flip_index)].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def merge_heatmaps(heatmaps: np.ndarray, flipped_back: np.ndarray) -> np.ndarray:
    """Average of the plain and flipped-back heatmaps (N, h, w, K)."""
    return 0.5 * (heatmaps + flipped_back)


def merge_coords(uv: np.ndarray, uv_flipped_back: np.ndarray) -> np.ndarray:
    """Average of plain and flipped-back keypoints (N, K, 2)."""
    return 0.5 * (uv + uv_flipped_back)
