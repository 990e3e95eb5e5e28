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

import json
from typing import Dict, Sequence

import numpy as np

from pipeline.fsutil import write_text_atomic
from pipeline.keypoints import CATEGORIES, category_indices
from pipeline.scoring.metrics import category_ne
from pipeline.store.layout import model_file, run_file
from pipeline.store.predictions import save_npz
from pipeline.store.records import is_current, write_record
from pipeline.store.rundata import RunData, bind_run


def mean_shape(keypoints: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean relative position of each point over the images where it is annotated.

    keypoints: (N, K, 3) original pixels; sizes: (N, 2) width, height.
    Returns (K, 2) in [0, 1] (0.5 for a point never annotated).
    """
    rel = keypoints[..., :2] / sizes[:, None, :].astype(np.float64)
    seen = keypoints[..., 2] >= 0
    total = (rel * seen[..., None]).sum(0)
    count = seen.sum(0)[:, None]
    return np.where(count > 0, total / np.maximum(count, 1), 0.5)


def place(shape: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Relative shape (K, 2) placed on images of sizes (M, 2) → (M, K, 2) pixels."""
    return shape[None, :, :] * sizes[:, None, :].astype(np.float64)


def predict_mean_shape(train_keypoints: np.ndarray, train_categories: Sequence[str],
                       train_sizes: np.ndarray, test_categories: Sequence[str],
                       test_sizes: np.ndarray) -> np.ndarray:
    """Each category's mean relative shape, placed on every test image of that category.

    train_keypoints: (N, 24, 3) original pixels; sizes: (N, 2) / (M, 2) width,
    height. Returns (M, 24, 2) original pixels of each test image (zeros for a
    category without training images).
    """
    train_categories = np.asarray(train_categories, dtype=object)
    test_categories = np.asarray(test_categories, dtype=object)
    pred = np.zeros((len(test_categories), train_keypoints.shape[1], 2))
    for cat in set(test_categories) & set(train_categories):
        fit, out = train_categories == cat, test_categories == cat
        pred[out] = place(mean_shape(train_keypoints[fit], train_sizes[fit]), test_sizes[out])
    return pred


def run_baseline(output, prep: RunData, name: str) -> dict:
    """Write OOF/test predictions of the mean shape for every category and fold of `prep` into run `name`.

    Skipped when runs/<name>/baseline.json records the same dataset and folds.
    Returns {"<cat>/fold<k>": val NE}.
    """
    record = run_file(output, name, "baseline")
    inputs = {"prep": prep.identity(with_cache=False)}
    if is_current(record, inputs):
        return json.loads(record.read_text())["val_ne"]
    train = prep.train_index()
    folds = prep.folds(train.image_id)
    test = prep.test_index()
    summary = {}
    for cat in sorted(set(train.category)):
        idx = category_indices(cat)
        in_cat = train.category == cat
        for f in prep.fold_ids:
            fit, val = in_cat & (folds != f), in_cat & (folds == f)
            shape = mean_shape(train.keypoints[fit][:, idx], train.sizes[fit])
            xy = place(shape, train.sizes[val])
            save_npz(model_file(output, name, cat, f, "oof"), image_id=train.image_id[val], xy=xy, score=np.ones(xy.shape[:2]))
            ne = category_ne(train.keypoints[val], xy, cat)
            write_text_atomic(model_file(output, name, cat, f, "metrics"), json.dumps({"val_ne": ne, "model": "meanshape"}))
            summary[f"{cat}/fold{f}"] = ne
            if test is not None:
                t_mask = test.category == cat
                t_xy = place(shape, test.sizes[t_mask])
                save_npz(model_file(output, name, cat, f, "test"), image_id=test.image_id[t_mask], xy=t_xy,
                         score=np.ones(t_xy.shape[:2]))
    bind_run(output, name, prep)
    write_record(record, inputs, val_ne=summary, categories=sorted(set(train.category)))
    return summary


def baseline_run(output, prep: RunData, name: str) -> Dict[str, float]:
    """The `baseline` stage: mean-shape predictions of every category and fold of `prep`
    (run_baseline), ensembled and scored as leaderboard row `name`. Returns run_baseline's summary."""
    from pipeline.combine.average import run_ensemble
    from pipeline.scoring.leaderboard import score_and_report

    summary = run_baseline(output, prep, name)
    categories = [c for c in CATEGORIES if any(k.startswith(c + "/") for k in summary)]
    run_ensemble(output, name, [name], categories)
    score_and_report(output, name, categories, config_hash="meanshape")
    return summary
