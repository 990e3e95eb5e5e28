"""Crop refinement (pipeline/heatmap/zoom.py, `crop.enabled`): box params, frame maps, warps, both passes,
and a tiny joint run with crops through train and predict."""

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline import frames, joint
from pipeline.config import load_config
from pipeline.heatmap import zoom
from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS
from pipeline.tools import synth


class Crop:
    margin, min_side, train_fraction = 0.1, 0.05, 1.0


def test_box_params_map_the_box_onto_the_input():
    xy = np.array([[[100.0, 200.0], [300.0, 260.0], [-1.0, -1.0]]])
    valid = np.array([[True, True, False]])
    p = zoom.box_params(xy, valid, 128, 0.1, np.array([10.0]), np.zeros((1, 4)))
    # the box is 200 px wide (x extent) × 1.2 = 240 px, centred on (200, 230)
    corners = frames.orig_to_input(np.array([[80.0, 110.0], [320.0, 350.0]]), p[0])   # the box edges
    assert corners == pytest.approx(np.array([[-0.5, -0.5], [127.5, 127.5]]))
    assert frames.orig_to_input(np.array([200.0, 230.0]), p[0]) == pytest.approx([63.5, 63.5])
    # the invalid point does not enter; an image without valid points keeps the fallback
    fallback = np.array([[0.25, 0.25, 0.0, 0.0]])
    assert np.array_equal(zoom.box_params(xy, ~valid & False, 128, 0.1, np.array([10.0]), fallback), fallback)
    # min_side: a single point gets a box of min_side
    one = zoom.box_params(xy[:, :1], valid[:, :1], 128, 0.1, np.array([64.0]), fallback)
    assert one[0, 0] == pytest.approx(2.0)


def test_frame_matrix_moves_points_between_frames():
    rng = np.random.default_rng(0)
    src = np.array([0.5, 0.5, 3.0, 10.0])
    dst = np.array([1.7, 1.7, -40.0, -25.0])
    pts = rng.uniform(0, 500, size=(6, 2))
    m = zoom.frame_matrix(src, dst)
    moved = pts_src = frames.orig_to_input(pts, src)
    moved = pts_src @ m[:, :2].T + m[:, 2]
    assert moved == pytest.approx(frames.orig_to_input(pts, dst))


def test_warp_cuts_the_box_out_of_the_cache():
    cache = np.zeros((1, 64, 64, 3), np.uint8)
    cache[0, 20:30, 40:50] = 200                 # a bright square in cache pixels
    src = np.array([[1.0, 1.0, 0.0, 0.0]])       # cache = original pixels
    box = zoom.box_params(np.array([[[40.0, 20.0], [49.0, 29.0]]]), np.ones((1, 2), bool), 32, 0.0,
                          np.array([1.0]), src)
    out = zoom.warp(cache, zoom.frame_matrix(src, box), 32)
    assert out.shape == (1, 32, 32, 3)
    assert out[0, 4:28, 4:28].min() > 150      # the square fills the crop
    flat = zoom.warp(cache, zoom.frame_matrix(src, np.array([[0.5, 0.5, 0.0, 0.0]])), 32)
    assert flat[0, 11:14, 21:24].min() > 150 and flat[0, :8].max() == 0   # 2:1 downscale keeps its place


def test_two_pass_feeds_pass_one_box_to_pass_two():
    """A fake model that always answers the point (10, 12) of its input: pass 2's input frame is the
    box around pass 1's answer, and xy comes back in original pixels of that frame."""
    seen = []

    def predict(inputs, params):
        seen.append(params.copy())
        xy = frames.input_to_orig(np.tile([[10.0, 12.0]], (len(inputs), 3, 1)), params[:, None, :])
        return {"xy": xy}

    images = np.zeros((2, 64, 64, 3), np.uint8)
    cache_params = np.tile([0.25, 0.25, 0.0, 0.0], (2, 1))
    full = np.tile([0.125, 0.125, 0.0, 0.0], (2, 1))
    sizes = np.array([[256, 256], [256, 256]])
    out = zoom.two_pass(predict, images, cache_params, full, sizes, Crop, 32)
    assert len(seen) == 2 and np.array_equal(seen[0], full)
    assert np.array_equal(out["crop_params"], seen[1])
    expected1 = frames.input_to_orig(np.array([10.0, 12.0]), full[0])
    assert out["xy_pass1"][0, 0] == pytest.approx(expected1)
    assert out["xy"][0, 0] == pytest.approx(frames.input_to_orig(np.array([10.0, 12.0]), seen[1][0]))
    # the box is min_side (0.05 × 256) around pass 1's single point
    assert seen[1][0, 0] == pytest.approx(32 / (0.05 * 256))


def test_more_box_passes_chain_their_boxes_and_average_their_keypoints():
    """predict.crop_passes = 3: each box is cut around the keypoints of the pass before it, the
    prediction is the mean of the three box passes' keypoints, and xy_box1 is what one pass gives."""
    seen, outputs = [], []
    rng = np.random.default_rng(1)

    def predict(inputs, params):
        seen.append(params.copy())
        answer = rng.uniform(4, 28, size=(len(inputs), 3, 2))   # a different answer in each pass
        outputs.append(frames.input_to_orig(answer, params[:, None, :]))
        return {"xy": outputs[-1]}

    images = np.zeros((2, 64, 64, 3), np.uint8)
    cache_params = np.tile([0.25, 0.25, 0.0, 0.0], (2, 1))
    full = np.tile([0.125, 0.125, 0.0, 0.0], (2, 1))
    sizes = np.array([[256, 256], [256, 256]])
    out = zoom.two_pass(predict, images, cache_params, full, sizes, Crop, 32, passes=3)
    assert len(seen) == 4 and np.array_equal(seen[0], full)
    for k in range(1, 4):   # box k is the box of pass k-1's keypoints
        box = zoom.box_params(outputs[k - 1], np.ones((2, 3), bool), 32, Crop.margin,
                              zoom.min_sides(sizes, Crop.min_side), full)
        assert seen[k] == pytest.approx(box)
    assert out["xy"] == pytest.approx(np.mean(outputs[1:], axis=0))
    assert np.array_equal(out["xy_box1"], outputs[1]) and np.array_equal(out["xy_pass1"], outputs[0])
    assert np.array_equal(out["crop_params"], seen[3])
    one = zoom.two_pass(predict, images, cache_params, full, sizes, Crop, 32)
    assert "xy_box1" not in one
    empty = zoom.two_pass(predict, images[:0], cache_params[:0], full[:0], sizes[:0], Crop, 32, passes=2)
    assert empty["xy"].shape == (0, 3, 2) and empty["crop_params"].shape == (0, 4)


def test_crop_passes_must_be_a_positive_integer():
    path = ROOT / "configs" / "real_cpu.yaml"
    assert load_config(path, ["predict.crop_passes=2"]).predict.crop_passes == 2
    with pytest.raises(ValueError, match="predict.crop_passes"):
        load_config(path, ["predict.crop_passes=0"])


def test_training_view_is_the_gt_box_or_the_whole_image():
    rng = np.random.default_rng(1)
    xy = np.array([[100.0, 100.0], [200.0, 150.0]])
    full = np.array([0.25, 0.25, 0.0, 0.0])
    views = [zoom.training_view(rng, xy, np.array([True, True]), full, np.array([512, 512]), Crop, 128)
             for _ in range(20)]
    for v in views:   # every view (train_fraction 1) holds both points inside the input
        inside = frames.orig_to_input(xy, v)
        assert (inside >= 0).all() and (inside <= 127).all() and v[0] > full[0]

    class Never(Crop):
        train_fraction = 0.0
    assert np.array_equal(zoom.training_view(rng, xy, np.array([True, True]), full, np.array([512, 512]),
                                             Never, 128), full)


def test_crop_settings_key_the_cache_and_refuse_a_small_source():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["crop.enabled=true", "crop.source_size=192"])
    assert cfg.cache_size == 192 and cfg.stage_settings("prep")["crop"] == {"source_size": 192}
    assert "crop" not in load_config(ROOT / "configs" / "demo.yaml").stage_settings("train")
    with pytest.raises(ValueError, match="crop.source_size"):
        load_config(ROOT / "configs" / "demo.yaml", ["crop.enabled=true", "crop.source_size=64"])


@pytest.mark.slow  # trains and predicts a joint model (~50 s)
def test_tiny_joint_run_with_crops_trains_and_predicts(tmp_path):
    from pipeline.fit.trainer import train
    from pipeline.heatmap.oof import run_predict
    from pipeline.prep.preprocess import preprocess
    from pipeline.store.predictions import load_npz

    data, out = tmp_path / "input", tmp_path / "output"
    synth.generate(data, train_per_cat=4, test_per_cat=1, seed=2, jobs=1, progress=False)
    settings = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=2", "train.batch_size=4",
                "train.epochs=1", "train.steps_per_epoch=2", "train.threads=2", "predict.batch_size=8",
                "train.joint=true", "crop.enabled=true", "crop.source_size=128"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", settings)
    preprocess(data, out, cfg.cache_size, cfg.data.folds, cfg.data.fold_seed, jobs=1, margin=cfg.model.margin,
               run="z")
    for f in range(2):
        m = train(out, cfg, "z", joint.JOINT, f)
        assert np.isfinite(m["val_ne"])
    table = run_predict(out, cfg, "z")
    assert "ne_pass1" in table.columns and table["ne_pass1"].notna().all()
    for cat in CATEGORIES:
        oof = load_npz(out / "runs" / "z" / cat / "fold0" / "oof.npz")
        assert oof["xy"].shape[1:] == (len(CATEGORY_KEYPOINTS[cat]), 2) and "xy_pass1" in oof
        assert not np.allclose(oof["xy"], oof["xy_pass1"])   # pass 2 saw another frame
    # two box passes: the same models re-predict (nothing retrains); pass 2 alone is reported
    two = load_config(ROOT / "configs" / "demo.yaml", settings + ["predict.crop_passes=2"])
    assert two.stage_settings("train") == cfg.stage_settings("train")
    assert two.stage_settings("predict") != cfg.stage_settings("predict")
    table2 = run_predict(out, two, "z")
    assert table2["ne_box1"].notna().all()
    assert np.allclose(table2["ne_box1"], table["ne_heatmap"])   # the first box pass is the one-pass prediction
