"""Mean-shape baseline (pipeline/combine/mean_shape.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import good_dataset

from pipeline.combine.mean_shape import (
    mean_shape,
    place,
    predict_mean_shape,
    run_baseline,
)
from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, category_indices
from pipeline.prep.preprocess import preprocess
from pipeline.store.layout import fold_dir
from pipeline.store.predictions import load_npz
from pipeline.store.rundata import run_data

RUN = "meanshape_test"

K = 3


def test_mean_shape_hand_computed():
    kps = np.array([
        [[10, 20, 1], [-1, -1, -1], [-1, -1, -1]],   # image 100 wide, 200 high
        [[100, 50, 0], [50, 25, 1], [-1, -1, -1]],   # image 200 wide, 100 high
    ])
    sizes = np.array([[100, 200], [200, 100]])
    shape = mean_shape(kps, sizes)
    # point 0: (0.1, 0.1) and (0.5, 0.5) (occluded still counts); point 1: only (0.25, 0.25); point 2: never
    np.testing.assert_allclose(shape, [[0.3, 0.3], [0.25, 0.25], [0.5, 0.5]])
    placed = place(shape, np.array([[10, 20], [300, 100]]))
    assert placed.shape == (2, 3, 2)
    np.testing.assert_allclose(placed, [[[3, 6], [2.5, 5], [5, 10]], [[90, 30], [75, 25], [150, 50]]])


def test_mean_shape_of_one_image_places_it_back():
    kps = np.array([[[30, 40, 1], [299, 0, 1]]])
    sizes = np.array([[300, 200]])
    np.testing.assert_allclose(place(mean_shape(kps, sizes), sizes)[0], kps[0, :, :2])


def test_predict_mean_shape_per_category_and_test_size():
    kps = np.full((3, 2, 3), -1)
    kps[0] = [[10, 20, 1], [-1, -1, -1]]      # "skirt", image 100 x 100
    kps[1] = [[30, 40, 1], [50, 50, 0]]       # "skirt", image 100 x 100
    kps[2] = [[80, 10, 1], [20, 90, 1]]       # "dress", image 200 x 100
    sizes = np.array([[100, 100], [100, 100], [200, 100]])
    pred = predict_mean_shape(kps, ["skirt", "skirt", "dress"], sizes,
                              ["dress", "skirt", "blouse"], np.array([[400, 200], [10, 20], [50, 50]]))
    assert pred.shape == (3, 2, 2)
    np.testing.assert_allclose(pred[0], [[160, 20], [40, 180]])      # dress shape (0.4, 0.1), (0.1, 0.9)
    np.testing.assert_allclose(pred[1], [[2, 6], [5, 10]])           # skirt mean (0.2, 0.3), (0.5, 0.5)
    np.testing.assert_allclose(pred[2], 0)                           # no blouse in training


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    good_dataset(root / "input", per_cat=4, warm_per_cat=2, n_test_per_cat=2)
    preprocess(root / "input", root / "output", size=32, k=K, seed=1, jobs=1, run="src")
    summary = run_baseline(root / "output", run_data(root / "output", "src"), RUN)
    return root / "output", summary


def test_rerun_is_a_no_op_and_binds_the_baseline(baseline_run):
    output, summary = baseline_run
    files = sorted(p for p in (output / "runs" / RUN).rglob("*.npz"))
    before = {p: p.read_bytes() for p in files}
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert run_baseline(output, run_data(output, "src"), RUN) == summary
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes and {p: p.read_bytes() for p in files} == before
    assert run_data(output, RUN).identity(with_cache=False) == run_data(output, "src").identity(with_cache=False)


def test_oof_covers_every_training_image_exactly_once(baseline_run):
    output, summary = baseline_run
    train = run_data(output, "src").train_index()
    assert set(summary) == {f"{c}/fold{f}" for c in CATEGORIES for f in range(K)}
    all_ids = []
    for cat in CATEGORIES:
        ids = []
        for f in range(K):
            oof = load_npz(fold_dir(output, RUN, cat, f) / "oof.npz")
            n = len(CATEGORY_KEYPOINTS[cat])
            assert oof["xy"].shape == (len(oof["image_id"]), n, 2)
            assert oof["score"].shape == (len(oof["image_id"]), n)
            ids += list(oof["image_id"])
        assert len(ids) == len(set(ids))
        assert set(ids) == set(train.image_id[train.category == cat])
        all_ids += ids
    assert sorted(all_ids) == sorted(train.image_id)


def test_oof_predictions_use_only_the_other_folds(baseline_run):
    output, _ = baseline_run
    prep = run_data(output, "src")
    train = prep.train_index()
    folds = pd.read_csv(prep.folds_file).set_index("image_id").loc[train.image_id, "fold"].to_numpy()
    for cat in ("dress", "trousers"):
        idx = category_indices(cat)
        for f in range(K):
            fit = (train.category == cat) & (folds != f)
            # mean relative position, computed point by point
            expected_shape = np.zeros((len(idx), 2))
            for j, k in enumerate(idx):
                rel = [train.keypoints[i, k, :2] / train.sizes[i] for i in np.nonzero(fit)[0]
                       if train.keypoints[i, k, 2] >= 0]
                expected_shape[j] = np.mean(rel, axis=0) if rel else 0.5
            oof = load_npz(fold_dir(output, RUN, cat, f) / "oof.npz")
            pos = [list(train.image_id).index(i) for i in oof["image_id"]]
            assert (folds[pos] == f).all()
            np.testing.assert_allclose(oof["xy"], expected_shape[None] * train.sizes[pos][:, None, :])
            metrics = json.loads((fold_dir(output, RUN, cat, f) / "metrics.json").read_text())
            assert metrics["model"] == "meanshape" and 0 < metrics["val_ne"] < 10


def test_test_predictions_for_every_test_image(baseline_run):
    output, _ = baseline_run
    test = run_data(output, "src").test_index()
    for cat in CATEGORIES:
        for f in range(K):
            pred = load_npz(fold_dir(output, RUN, cat, f) / "test.npz")
            assert list(pred["image_id"]) == list(test.image_id[test.category == cat])
            sizes = test.sizes[test.category == cat]
            assert ((pred["xy"] >= 0) & (pred["xy"] <= sizes[:, None, :])).all()
