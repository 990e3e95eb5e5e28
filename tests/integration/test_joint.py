"""One model for every category (pipeline/joint.py, `train.joint`).

Unit: channel bookkeeping (which output maps a category's points are, the 24-point flip,
which images a model trains on). End to end on a tiny synthetic set: a joint run trains one
model per fold on every category's images, and predict writes per-category prediction files
(the category's own channels) that ensemble and score consume unchanged.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline import joint
from pipeline.config import load_config
from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    FLIP_INDEX,
    KEYPOINTS,
    NUM_KEYPOINTS,
)
from pipeline.tools import synth

TINY = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=2", "train.batch_size=4",
        "train.epochs=1", "train.steps_per_epoch=3", "train.threads=2", "predict.batch_size=8",
        "stack.mode=off", "train.joint=true"]


def test_category_channels_pick_the_categorys_keypoints():
    for cat in CATEGORIES:
        cols = joint.category_channels(joint.JOINT, cat)
        assert [KEYPOINTS[c] for c in cols] == list(CATEGORY_KEYPOINTS[cat])
        # a per-category model's channels are the category's own, in order
        assert joint.category_channels(cat, cat) == list(range(len(CATEGORY_KEYPOINTS[cat])))


def test_joint_flip_swaps_left_and_right_within_every_category():
    flip = joint.flip_index(joint.JOINT)
    assert flip == list(FLIP_INDEX) and len(flip) == NUM_KEYPOINTS
    for cat in CATEGORIES:
        own = set(joint.category_channels(joint.JOINT, cat))
        assert {flip[c] for c in own} == own  # a flip never moves a point into another category
    assert KEYPOINTS[flip[KEYPOINTS.index("cuff_left_in")]] == "cuff_right_in"
    assert KEYPOINTS[flip[KEYPOINTS.index("crotch")]] == "crotch"


def test_select_category_keeps_channel_axes_only():
    n, c = 3, NUM_KEYPOINTS
    pred = {"xy": np.arange(n * c * 2, dtype=float).reshape(n, c, 2), "score": np.ones((n, c)),
            "heatmaps": np.zeros((n, 8, 8, c)), "other": np.zeros((n, 5))}
    out = joint.select_category(pred, joint.JOINT, "skirt")
    cols = joint.category_channels(joint.JOINT, "skirt")
    assert out["xy"].shape == (n, 4, 2) and np.array_equal(out["xy"], pred["xy"][:, cols])
    assert out["score"].shape == (n, 4) and out["heatmaps"].shape == (n, 8, 8, 4)
    assert out["other"] is pred["other"]
    assert joint.select_category({"xy": pred["xy"][:, cols]}, "skirt", "skirt")["xy"].shape == (n, 4, 2)


def test_image_mask_and_model_names():
    cats = np.array(["dress", "skirt", "blouse", "skirt"], dtype=object)
    assert joint.image_mask(cats, "skirt", CATEGORIES).tolist() == [False, True, False, True]
    assert joint.image_mask(cats, joint.JOINT, ("skirt", "dress")).tolist() == [True, True, False, True]
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.joint=true", "data.categories=[dress,skirt]"])
    assert joint.model_names(cfg) == (joint.JOINT,) and joint.model_for(cfg, "skirt") == joint.JOINT
    plain = load_config(ROOT / "configs" / "demo.yaml")
    assert joint.model_names(plain) == CATEGORIES and joint.model_for(plain, "skirt") == "skirt"


def test_joint_training_depends_on_the_categories_per_category_training_does_not():
    a = load_config(ROOT / "configs" / "demo.yaml", ["train.joint=true"]).stage_settings("train")
    b = load_config(ROOT / "configs" / "demo.yaml", ["train.joint=true", "data.categories=[dress]"])
    assert a != b.stage_settings("train")
    plain = load_config(ROOT / "configs" / "demo.yaml").stage_settings("train")
    assert "categories" not in plain["data"]


def test_joint_cannot_be_set_per_category(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"base: {ROOT / 'configs' / 'demo.yaml'}\ncategories: {{skirt: {{train: {{joint: true}}}}}}\n")
    with pytest.raises(ValueError, match="categories.skirt.train.joint"):
        load_config(path)


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    from pipeline.fit.trainer import train
    from pipeline.prep.preprocess import preprocess

    root = tmp_path_factory.mktemp("joint")
    data, out = root / "input", root / "output"
    synth.generate(data, train_per_cat=6, test_per_cat=2, seed=5, jobs=1, progress=False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", TINY)
    preprocess(data, out, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=1,
               margin=cfg.model.margin, run="j")
    metrics = [train(out, cfg, "j", joint.JOINT, f) for f in range(cfg.data.folds)]
    return {"data": data, "out": out, "cfg": cfg, "metrics": metrics}


def test_joint_model_trains_on_every_category(joint_run):
    from pipeline.store.rundata import run_data

    index = run_data(joint_run["out"], "j").train_index()
    for f, m in enumerate(joint_run["metrics"]):
        assert m["category"] == joint.JOINT and np.isfinite(m["val_ne"])
        assert m["n_train"] + m["n_val"] == len(index.image_id)
    model_dir = joint_run["out"] / "runs" / "j" / joint.JOINT / "fold0"
    assert (model_dir / "model.keras").exists()
    assert not (joint_run["out"] / "runs" / "j" / "dress" / "fold0" / "model.keras").exists()


def test_joint_predictions_are_per_category_and_score(joint_run):
    from pipeline.combine.average import run_ensemble
    from pipeline.heatmap.oof import run_predict
    from pipeline.store.predictions import load_npz
    from pipeline.store.records import file_id

    out, cfg = joint_run["out"], joint_run["cfg"]
    table = run_predict(out, cfg, "j")
    assert len(table) == len(CATEGORIES) * cfg.data.folds
    for cat in CATEGORIES:
        oof = load_npz(out / "runs" / "j" / cat / "fold1" / "oof.npz")
        assert oof["xy"].shape[1:] == (len(CATEGORY_KEYPOINTS[cat]), 2)
        assert oof["score"].shape[1] == len(CATEGORY_KEYPOINTS[cat])
        record = json.loads((out / "runs" / "j" / cat / "fold1" / "predict.json").read_text())
        assert record["inputs"]["model"] == file_id(out / "runs" / "j" / joint.JOINT / "fold1" / "model.keras")
    run_ensemble(out, "j", ["j"], cfg.data.categories)
    assert (out / "runs" / "j" / "skirt" / "oof.csv").exists()


def test_make_plans_one_model_per_fold(joint_run, tmp_path):
    """make -n train-all of a joint run lists the joint models only, and `make train CAT=dress`
    names the model to train instead."""
    out = joint_run["out"]
    args = [f"INPUT={joint_run['data']}", f"OUTPUT={out}", "RUN=j", "SET=" + " ".join(TINY)]
    plan = subprocess.run(["make", "-n", "--no-print-directory", "_train-all", *args], cwd=ROOT,
                          capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    vars_mk = (out / "runs" / "j" / ".stamps" / "vars.mk").read_text()
    assert "MODEL_NAMES := joint" in vars_mk
    assert (out / "runs" / "j" / ".stamps" / "train-joint.json").exists()
    assert "--category dress" not in plan.stdout
    wrong = subprocess.run([sys.executable, "-m", "pipeline.stages.train", "--output", str(out), "--run", "j",
                            "--category", "dress", "--fold", "0"] + [a for s in TINY for a in ("--set", s)],
                           cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode != 0 and "joint" in wrong.stderr


def test_keys_added_later_leave_old_records_current():
    """train.joint false and train.val_images 0 (what the code did before they existed) are left
    out of the train settings, so models trained before them are not retrained."""
    plain = load_config(ROOT / "configs" / "demo.yaml").stage_settings("train")["train"]
    assert "joint" not in plain and "val_images" not in plain
    sub = load_config(ROOT / "configs" / "demo.yaml", ["train.val_images=50"]).stage_settings("train")["train"]
    assert sub["val_images"] == 50


def test_val_images_monitors_an_even_subset_of_the_fold(joint_run):
    from pipeline.fit.fold_data import FoldData
    from pipeline.store.rundata import run_data

    prep = run_data(joint_run["out"], "j")
    full = FoldData(prep, joint_run["cfg"], joint.JOINT, 0)
    cfg = load_config(ROOT / "configs" / "demo.yaml", TINY + ["train.val_images=5"])
    part = FoldData(prep, cfg, joint.JOINT, 0)
    assert len(part.val_ids) == 5 and set(part.val_ids) <= set(full.val_ids)
    assert len(part.val) == len(full.val) == len(full.val_ids)   # the fold itself is unchanged
    assert part.val_images.shape[0] == part.val_keypoints.shape[0] == part.val_channels.shape[0] == 5
