"""One model for every category (`train.joint: true`), beside the per-category models.

A joint model predicts all 24 keypoint channels (CSV order). Its training images are
every image of `data.categories`; an image's loss counts only its own category's points,
because the other categories' points are absent (v = -1, weight 0) in every annotation
row. The model lives in OUTPUT/runs/<run>/joint/fold<k>/ (one per fold); `predict` runs it
on each category's images and keeps that category's channels, so the prediction files,
ensembling, stacking and scoring downstream are those of a per-category run.

Names used below: a *model name* is a category (per-category runs) or JOINT; its
*channels* are the KEYPOINTS indices its output maps stand for, in order.
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
    models = len(cfg.fold_ids)
    return f"{RUN}_k{cfg.data.folds}_seed{cfg.data.fold_seed}" + (f"_m{models}" if models < cfg.data.folds else "")

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
