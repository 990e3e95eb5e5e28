"""Mean-shape baseline: per category, the mean relative keypoint positions.

For every (category, fold) the mean of x / width and y / height over the
training folds' annotated points predicts the held-out fold (OOF) and the
test set. It writes the same files as a trained model (fold<k>/oof.npz,
test.npz, metrics.json) under OUTPUT/runs/meanshape_k<k>_seed<s>/ (one per
fold split), so ensemble, submit and score treat it like any other run; its NE
is the yardstick, and it is the default fallback of category-subset runs.

CLI: python -m pipeline.stages.baseline --output DIR [--config C] [--run RUN]   (RUN: whose prep binding to use)
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from pipeline.keypoints import (
    CATEGORY_KEYPOINTS,
    FLIP_INDEX,
    KEYPOINT_INDEX,
    NUM_KEYPOINTS,
    category_flip_index,
    category_indices,
)

RUN = "meanshape"


def baseline_name(cfg) -> str:
    """Run name of the mean-shape baseline for a config's folds (its OOF needs the same split)."""
    return f"{RUN}_k{cfg.data.folds}_seed{cfg.data.fold_seed}"

JOINT = "joint"


def model_names(cfg) -> Tuple[str, ...]:
    """The models a run trains per fold: (JOINT,) for a joint run, else its categories."""
    return (JOINT,) if cfg.train.joint else tuple(cfg.data.categories)


def model_for(cfg, category: str) -> str:
    """Name of the model that predicts `category` in this run (its fold directories' parent)."""
    return JOINT if cfg.train.joint else category


def channels(model: str) -> List[int]:
    """KEYPOINTS indices of the model's output channels, in channel order."""
    return list(range(NUM_KEYPOINTS)) if model == JOINT else category_indices(model)


def flip_index(model: str) -> List[int]:
    """Flip permutation of the model's channels (channel c of a mirror is channel result[c])."""
    return list(FLIP_INDEX) if model == JOINT else category_flip_index(model)


def category_channels(model: str, category: str) -> List[int]:
    """Positions, among the model's channels, of `category`'s keypoints (CATEGORY_KEYPOINTS order)."""
    own = {k: c for c, k in enumerate(channels(model))}
    return [own[KEYPOINT_INDEX[name]] for name in CATEGORY_KEYPOINTS[category]]


def image_mask(image_categories: np.ndarray, model: str, categories: Sequence[str]) -> np.ndarray:
    """(N,) bool: the images a model trains and validates on (its category, or every run category)."""
    image_categories = np.asarray(image_categories, dtype=object)
    if model == JOINT:
        return np.isin(image_categories, list(categories))
    return image_categories == model


def channel_mask(model: str, image_categories: np.ndarray) -> np.ndarray:
    """(N, C) bool: the model's channels that are each image's own category's points."""
    image_categories = np.asarray(image_categories, dtype=object)
    mask = np.zeros((len(image_categories), len(channels(model))), bool)
    for cat in set(image_categories):
        mask[np.ix_(image_categories == cat, category_channels(model, cat))] = True
    return mask


def select_category(pred: dict, model: str, category: str) -> dict:
    """A prediction dict of `predict_images` reduced to `category`'s channels.

    Arrays (N, C, ...) with C the model's channel count keep axis 1's category channels;
    `heatmaps` (N, h, w, C) keep its last axis'. Other entries are returned unchanged.
    """
    cols = category_channels(model, category)
    n_channels = len(channels(model))
    if len(cols) == n_channels:
        return dict(pred)
    out = {}
    for name, value in pred.items():
        if name == "heatmaps":
            out[name] = value[..., cols]
        elif isinstance(value, np.ndarray) and value.ndim >= 2 and value.shape[1] == n_channels:
            out[name] = value[:, cols]
        else:
            out[name] = value
    return out
