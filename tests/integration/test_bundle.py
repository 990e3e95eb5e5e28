"""pipeline.stages.export: `make export` bundles that predict without OUTPUT, as the run itself predicted.

One tiny joint run with the crop pass and the stacker forced on (the hardest path: two
passes, channel selection, per-fold stacking) is trained, exported, copied elsewhere, and
its OUTPUT removed; the bundle alone must give the run's own test predictions.
"""
import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline import joint
from pipeline.config import load_config, save_config
from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX
from pipeline.tools import synth

SETTINGS = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=2", "train.batch_size=4",
            "train.epochs=2", "train.steps_per_epoch=4", "train.threads=2", "predict.batch_size=8",
            "train.joint=true", "crop.enabled=true", "crop.source_size=96", "stack.mode=on",
            "stack.n_estimators=10", "stack.jobs=1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pipeline.combine.average import run_ensemble
    from pipeline.combine.stacker import run_stack
    from pipeline.fit.trainer import train
    from pipeline.heatmap.oof import run_predict
    from pipeline.prep.preprocess import preprocess
    from pipeline.release.bundle import export_run
    from pipeline.scoring.leaderboard import score_and_report
    from pipeline.scoring.submission import gather_test_predictions
    from pipeline.store.rundata import run_data

    root = tmp_path_factory.mktemp("bundle")
    data, out = root / "input", root / "output"
    synth.generate(data, train_per_cat=24, test_per_cat=3, seed=5, jobs=1, progress=False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", SETTINGS)
    preprocess(data, out, cfg.cache_size, cfg.data.folds, cfg.data.fold_seed, jobs=1, margin=cfg.model.margin,
               run="b")
    for f in range(2):
        train(out, cfg, "b", joint.JOINT, f)
    run_predict(out, cfg, "b")
    run_ensemble(out, "b", ["b"], cfg.data.categories)
    save_config(cfg, out / "runs" / "b" / "config.yaml")  # as `make ensemble` writes it
    assert run_stack(out, cfg, "b", ["b"])["use_stack"]
    score_and_report(out, "b", CATEGORIES, cfg.digest())
    score_and_report(out, "b", CATEGORIES, cfg.digest(), stacked=True)
    test = run_data(out, "b").test_index()
    expected = gather_test_predictions(out, "b", test, use_stack=True)  # what the submission holds
    plain = gather_test_predictions(out, "b", test, use_stack=False)
    directory = export_run(out, "b", progress=False)
    with tarfile.open(directory.parent / "b.tar.gz") as tar:  # the tarball alone, somewhere else
        tar.extractall(root / "elsewhere")
    shutil.rmtree(out)
    return {"bundle": root / "elsewhere" / "b", "data": data, "test": test, "expected": expected,
            "plain": plain}


def test_bundle_holds_what_it_says(exported):
    meta = json.loads((exported["bundle"] / "bundle.json").read_text())
    assert meta["models"] == 2 and meta["categories"] == list(CATEGORIES)
    assert set(meta["stackers"]) == set(CATEGORIES)
    (member,) = meta["members"]
    assert member["models"] == {"joint": ["members/b/joint/fold0.keras", "members/b/joint/fold1.keras"]}
    for rel in member["models"]["joint"]:
        path = exported["bundle"] / rel
        assert path.exists() and path.with_suffix(".tflite").exists() and path.with_suffix(".onnx").exists()
        assert (path.parent / (path.stem + "_savedmodel") / "saved_model.pb").exists()
    assert meta["codec"]["b"]["crop"]["enabled"] and meta["data"]["fold_assignment"]
    assert np.isfinite(meta["scores"]["stacked"]["cv_ne"]) and np.isfinite(meta["scores"]["stacked"]["test_ne"])
    card = (exported["bundle"] / "MODEL_CARD.md").read_text()
    assert "CV " in card and "--bundle" in card


def test_predict_image_from_the_bundle_alone_gives_the_runs_test_predictions(exported):
    test, expected = exported["test"], exported["expected"]
    for i in [0, len(test.image_id) // 2, len(test.image_id) - 1]:
        cat = test.category[i]
        res = subprocess.run([sys.executable, "-m", "pipeline.stages.predict_image", "--bundle", str(exported["bundle"]),
                              "--category", cat, str(exported["data"] / "test" / test.image_id[i])],
                             check=True, cwd=ROOT, capture_output=True, text=True)
        got = json.loads(res.stdout)["keypoints"]
        cols = [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[cat]]
        w, h = test.sizes[i]
        want = np.clip(expected[i, cols], 0, [w - 1, h - 1])
        assert np.abs(np.array([got[n][:2] for n in CATEGORY_KEYPOINTS[cat]]) - want).max() < 1.0
    # the stacker changed something, so matching it is not matching the plain average by accident
    assert np.nanmax(np.abs(exported["expected"] - exported["plain"])) > 0.01


def test_predict_dir_writes_the_submission_rows(exported, tmp_path):
    from pipeline.release.bundle import Ensemble, predict_folder
    from pipeline.scoring.submission import finalize
    from pipeline.tianchi import read_annotations

    out_csv = tmp_path / "pred.csv"
    n = predict_folder(Ensemble.load(exported["bundle"]), exported["data"] / "test" / "Images", out_csv)
    test = exported["test"]
    assert n == len(test.image_id)
    table, problems = read_annotations(out_csv)
    assert problems == []
    pos = {iid: i for i, iid in enumerate(table.image_id)}
    want = finalize(exported["expected"], test.sizes)
    for i, iid in enumerate(test.image_id):
        cols = [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[test.category[i]]]
        got = table.keypoints[pos[iid]][cols, :2]
        assert np.abs(got - want[i, cols]).max() <= 1


def test_bad_bundle_and_folder_errors_name_them(exported, tmp_path):
    from pipeline.release.bundle import Ensemble, list_images

    with pytest.raises(FileNotFoundError, match="not a bundle"):
        Ensemble.load(tmp_path)
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="misc.*give CAT="):
        list_images(tmp_path)
    assert list_images(tmp_path, "dress")[0][:2] == (f"{tmp_path.name}/misc/a.jpg", "dress")


@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
def test_other_runtimes_match_keras_on_heatmaps_and_ne(exported, runtime):
    """The bundle's TFLite / ONNX file of fold 0 against its Keras file computing in float32 (as the
    exported files do: a model trained under mixed_bfloat16 keeps that policy in its .keras file),
    through the same prediction path: the largest heatmap difference under 1e-4, the NE difference
    under 1e-3 (measured: ~1e-6 and 0)."""
    from pipeline.heatmap.inference import load_model, predict_category
    from pipeline.prep.images import load_letterboxed
    from pipeline.release.runtimes import OnnxModel, TFLiteModel, float32_model
    from pipeline.scoring.metrics import category_ne
    from pipeline.tianchi import read_annotations

    cfg = load_config(exported["bundle"] / "members/b/config.yaml")
    path = exported["bundle"] / "members/b/joint/fold0.keras"
    keras_model = float32_model(load_model(path))
    lite = TFLiteModel.from_file(path.with_suffix(".tflite")) if runtime == "tflite" \
        else OnnxModel.from_file(path.with_suffix(".onnx"))
    test = exported["test"]
    rows = [load_letterboxed(exported["data"] / "test" / iid, cfg.cache_size, cfg.model.margin)
            for iid in test.image_id]
    images, params = np.stack([r[0] for r in rows]), np.stack([r[3] for r in rows])
    truth, _ = read_annotations(exported["data"] / "test" / "answers.csv")
    truth_of = dict(zip(truth.image_id, truth.keypoints))
    for cat in ("dress", "trousers"):
        mask = test.category == cat
        args = (joint.JOINT, cat, images[mask], params[mask], test.sizes[mask], cfg)
        a = predict_category(keras_model, *args, return_heatmaps=True)
        b = predict_category(lite, *args, return_heatmaps=True)
        assert a["heatmaps"].shape == b["heatmaps"].shape
        assert np.abs(a["heatmaps"] - b["heatmaps"]).max() < 1e-4
        kps = np.stack([truth_of[i] for i in test.image_id[mask]])
        assert abs(category_ne(kps, a["xy"], cat) - category_ne(kps, b["xy"], cat)) < 1e-3
