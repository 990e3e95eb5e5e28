"""Models on some of the folds only (`data.fold_models`): each trains on more of the photos.

With k = 3 and `data.fold_models: 2`, two models are trained (folds 0 and 1), each on the
other two thirds of the photos. CV then pools the OOF predictions of folds 0 and 1 only: every
stage downstream of training (predict, ensemble, stack, score, baseline, submit) must cover
exactly those images, never pass a fold-2 image off as predicted, and count 2 networks. On a
tiny synthetic set, in process.
"""
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline import joint
from pipeline.config import load_config
from pipeline.keypoints import CATEGORIES
from pipeline.tools import synth

TINY = ["data.folds=3", "data.fold_models=2", "model.input_size=64", "model.width=16", "model.stages=2",
        "train.batch_size=4", "train.epochs=1", "train.steps_per_epoch=2", "train.threads=2",
        "predict.batch_size=8", "train.joint=true", "stack.mode=on", "stack.n_estimators=5", "stack.jobs=1",
        "stack.min_child_samples=2"]
RUN = "fm"


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory):
    from pipeline.combine.average import run_ensemble
    from pipeline.combine.stacker import run_stack
    from pipeline.fit.trainer import train
    from pipeline.heatmap.oof import run_predict
    from pipeline.prep.preprocess import preprocess

    root = tmp_path_factory.mktemp("fold_models")
    data, out = root / "input", root / "output"
    synth.generate(data, train_per_cat=9, test_per_cat=2, seed=11, jobs=1, progress=False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", TINY)
    preprocess(data, out, cfg.cache_size, cfg.data.folds, cfg.data.fold_seed, jobs=1, margin=cfg.model.margin,
               run=RUN, models=cfg.data.fold_models)
    metrics = [train(out, cfg, RUN, joint.JOINT, f) for f in cfg.fold_ids]
    table = run_predict(out, cfg, RUN)
    run_ensemble(out, RUN, [RUN], cfg.data.categories)
    stack = run_stack(out, cfg, RUN, [RUN])
    return {"data": data, "out": out, "cfg": cfg, "metrics": metrics, "table": table, "stack": stack}


def folds_of(run):
    from pipeline.store.rundata import run_data

    prep = run_data(run["out"], RUN)
    index = prep.train_index()
    return prep, index, prep.folds(index.image_id)


def test_two_models_train_on_two_thirds_each(fm_run):
    prep, index, folds = folds_of(fm_run)
    assert prep.fold_ids == (0, 1) and prep.k == 3
    for f, m in zip((0, 1), fm_run["metrics"]):
        assert m["n_val"] == int((folds == f).sum())
        assert m["n_train"] == len(index.image_id) - m["n_val"]   # the unmodelled fold 2 trains too
    assert not (fm_run["out"] / "runs" / RUN / joint.JOINT / "fold2").exists()
    assert sorted(set(fm_run["table"]["fold"])) == [0, 1]


def test_oof_covers_exactly_the_modelled_folds(fm_run):
    from pipeline.store.predictions import read_category_csv

    prep, index, folds = folds_of(fm_run)
    oof_index = prep.oof_index()
    assert set(oof_index.image_id) == set(index.image_id[folds < 2])
    for cat in CATEGORIES:
        for name in ("oof.csv", "oof_stack.csv"):
            ids, xy, _ = read_category_csv(fm_run["out"] / "runs" / RUN / cat / name, cat)
            want = index.image_id[(index.category == cat) & (folds < 2)]
            assert sorted(ids) == sorted(want) and np.isfinite(xy).all(), (cat, name)


def test_cv_is_scored_on_the_modelled_folds_and_the_baseline_on_the_same_images(fm_run):
    from pipeline.combine.mean_shape import baseline_run
    from pipeline.scoring.leaderboard import categories_ne, oof_predictions, score_run
    from pipeline.store.rundata import run_data

    out, cfg = fm_run["out"], fm_run["cfg"]
    prep, index, folds = folds_of(fm_run)
    row = score_run(out, RUN, CATEGORIES)["row"]
    sub = index.subset(folds < 2)
    expect = categories_ne(sub.keypoints, oof_predictions(out, RUN, sub), sub.category, CATEGORIES)
    assert row["cv_ne"] == pytest.approx(expect["ne"]) and row["n_images_skipped"] == 0
    assert row["n_points"] == expect["n_points"]
    name = joint.baseline_name(cfg)
    assert name.endswith("_m2")  # never the same run as the baseline of a config with a model per fold
    baseline_run(out, run_data(out, RUN, cfg), name)
    base = score_run(out, name, CATEGORIES)["row"]
    assert base["n_points"] == row["n_points"]  # same images, so the two rows compare
    assert not (out / "runs" / name / "dress" / "fold2").exists()


def test_submission_needs_two_networks(fm_run):
    import pandas as pd

    from pipeline.scoring.submission import submit_run
    from pipeline.store.networks import run_networks

    out = fm_run["out"]
    assert len(run_networks(out, RUN, CATEGORIES)) == 2
    submit_run(out, RUN, CATEGORIES, joint.baseline_name(fm_run["cfg"]), max_models=2)
    test = pd.read_csv(fm_run["data"] / "test" / "test.csv")
    sub = pd.read_csv(out / "runs" / RUN / "submission.csv")
    assert sorted(sub["image_id"]) == sorted(test["image_id"])


def test_make_plans_the_modelled_folds_and_train_refuses_the_others(fm_run):
    from pipeline.store.stamps import make_vars

    out, cfg = fm_run["out"], fm_run["cfg"]
    lines = dict(line.split(" := ", 1) for line in make_vars(cfg, RUN, out).splitlines())
    assert lines["FOLD_IDS"] == "0 1"
    assert lines["MODELS"].split() == [str(out / "runs" / RUN / joint.JOINT / f"fold{f}" / "metrics.json")
                                       for f in (0, 1)]
    wrong = subprocess.run([sys.executable, "-m", "pipeline.stages.train", "--output", str(out), "--run", RUN,
                            "--fold", "2"] + [a for s in TINY for a in ("--set", s)],
                           cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode != 0 and "data.fold_models=2" in wrong.stderr, wrong.stderr


def test_a_config_with_other_fold_models_is_refused(fm_run):
    from pipeline.store.rundata import PrepMismatch, run_data

    every = load_config(ROOT / "configs" / "demo.yaml", [s for s in TINY if "fold_models" not in s])
    with pytest.raises(PrepMismatch, match="3 folds \\(2 of them with models\\).*asks for .*3 folds, fold seed"):
        run_data(fm_run["out"], RUN, every)
    with pytest.raises(ValueError, match="data.fold_models=4 must be in 0..data.folds=3"):
        load_config(ROOT / "configs" / "demo.yaml", TINY + ["data.fold_models=4"])
