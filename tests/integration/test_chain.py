"""End-to-end smoke test of the whole chain on a tiny synthetic set, CPU only.

preprocess → train (every category, both folds, a tiny CPM) → resume → predict
(flip TTA) → ensemble → stack → submit (validated) → score → report, plus the
meaning of the stage outputs (OOF covers every training image once, the
leaderboard's test NE equals an independent NE of submission.csv).
"""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline.config import load_config
from pipeline.keypoints import CATEGORIES
from pipeline.tools import synth

TINY = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=2", "train.batch_size=4",
        "train.epochs=2", "train.steps_per_epoch=3", "train.threads=2", "predict.batch_size=8",
        "stack.n_estimators=10", "stack.jobs=1"]


def tiny_config(*extra):
    return load_config(ROOT / "configs" / "demo.yaml", TINY + list(extra))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tiny dataset, preprocessed and trained once for the module."""
    from pipeline.combine.mean_shape import run_baseline
    from pipeline.fit.trainer import train
    from pipeline.joint import baseline_name
    from pipeline.prep.preprocess import preprocess
    from pipeline.store.rundata import run_data

    root = tmp_path_factory.mktemp("chain")
    data, out = root / "input", root / "output"
    synth.generate(data, train_per_cat=8, test_per_cat=3, seed=3, warm_per_cat=2, jobs=1, progress=False)
    cfg = tiny_config()
    preprocess(data, out, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=1, margin=cfg.model.margin,
               run="tiny")
    run_baseline(out, run_data(out, "tiny"), baseline_name(cfg))
    metrics = {(c, f): train(out, cfg, "tiny", c, f) for c in CATEGORIES for f in range(cfg.data.folds)}
    return {"data": data, "out": out, "cfg": cfg, "metrics": metrics}


def test_training_artifacts(chain):
    out = chain["out"] / "runs" / "tiny" / "dress" / "fold1"
    for name in ("config.yaml", "model.keras", "history.csv", "metrics.json", "tensorboard"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("val_ne", "best_epoch", "epochs", "seconds", "train_img_per_s"):
        assert key in m
    assert m["epochs"] == 2 and 1 <= m["best_epoch"] <= 2
    assert np.isfinite(m["val_ne"]) and m["val_ne"] > 0
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [0, 1]
    assert hist["val_ne"].min() == pytest.approx(m["val_ne"])


def test_resume_continues_history(chain):
    """A finished run asked for more epochs resumes from its saved state and appends."""
    from pipeline.fit.trainer import train

    cfg = tiny_config("train.epochs=3")
    before = pd.read_csv(chain["out"] / "runs/tiny/skirt/fold0/history.csv")
    m = train(chain["out"], cfg, "tiny", "skirt", 0)
    after = pd.read_csv(chain["out"] / "runs/tiny/skirt/fold0/history.csv")
    assert list(after["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(after.iloc[:2], before)
    assert m["epochs"] == 3
    # already finished: a rerun does nothing
    again = train(chain["out"], cfg, "tiny", "skirt", 0)
    assert again == m


def test_predict_ensemble_submit_score(chain):
    from pipeline.combine.average import run_ensemble
    from pipeline.combine.stacker import run_stack
    from pipeline.heatmap.oof import run_predict
    from pipeline.scoring.leaderboard import score_run, update_leaderboard
    from pipeline.scoring.metrics import score_files
    from pipeline.scoring.submission import (
        gather_test_predictions,
        validate,
        write_submission,
    )
    from pipeline.store.rundata import run_data

    out, cfg = chain["out"], chain["cfg"]
    table = run_predict(out, cfg, "tiny")
    assert {"ne_plain", "ne_mirror", "ne_heatmap", "ne_coords"} <= set(table.columns)
    oof = np.load(out / "runs/tiny/dress/fold0/oof.npz", allow_pickle=True)
    assert oof["xy"].shape[1:] == (15, 2) and np.isfinite(oof["xy"]).all()

    run_ensemble(out, "tiny", ["tiny"], cfg.data.categories)
    train = run_data(out, "tiny").train_index()
    covered = np.concatenate([pd.read_csv(out / f"runs/tiny/{c}/oof.csv")["image_id"] for c in CATEGORIES])
    assert sorted(covered) == sorted(train.image_id)  # every training image exactly once

    result = run_stack(out, cfg, "tiny", ["tiny"])
    assert set(result) >= {"cv_ne_plain", "cv_ne_stack", "use_stack"}

    test = run_data(out, "tiny").test_index()
    xy = gather_test_predictions(out, "tiny", test)
    sub = out / "submission.csv"
    write_submission(sub, chain["data"] / "test" / "test.csv", test.image_id, test.category, xy, test.sizes)
    assert validate(sub, chain["data"] / "test" / "test.csv") == []

    row = score_run(out, "tiny", CATEGORIES, cfg.digest())["row"]
    independent = score_files(chain["data"] / "test" / "answers.csv", sub)
    assert row["test_ne"] == pytest.approx(independent["ne"], abs=1e-9)
    board = update_leaderboard(out, row)
    assert "tiny" in set(board["name"])


def test_models_column_and_limit(chain):
    """The leaderboard row counts the run's networks (5 categories × 2 folds); submit.max_models
    under that count refuses the submission, naming it, and writes nothing."""
    from pipeline.combine.average import run_ensemble
    from pipeline.heatmap.oof import run_predict
    from pipeline.scoring.leaderboard import score_and_report
    from pipeline.scoring.submission import submit_run

    out, cfg = chain["out"], chain["cfg"]
    run_predict(out, cfg, "tiny")
    run_ensemble(out, "tiny", ["tiny"], cfg.data.categories)
    assert score_and_report(out, "tiny", CATEGORIES, cfg.digest())["models"] == 10
    with pytest.raises(ValueError, match="needs 10 trained networks, over submit.max_models=9"):
        submit_run(out, "tiny", CATEGORIES, "meanshape_k2_seed42", max_models=9)
    assert not (out / "runs/tiny/submission.csv").exists()
    assert submit_run(out, "tiny", CATEGORIES, "meanshape_k2_seed42", max_models=10)["models"] == 10


def test_missing_member_is_an_error(chain):
    from pipeline.combine.average import run_ensemble

    with pytest.raises(FileNotFoundError, match="no_such_run"):
        run_ensemble(chain["out"], "bad", ["tiny", "no_such_run"], ["skirt"])


def test_cli_chain_and_report(chain):
    """The make-facing CLIs: score, report, predict_image."""
    env_out = str(chain["out"])
    args = ["--config", str(ROOT / "configs/demo.yaml")] + sum((["--set", s] for s in TINY), [])
    res = subprocess.run([sys.executable, "-m", "pipeline.stages.baseline", "--output", env_out, "--run", "tiny"] + args,
                         check=True, cwd=ROOT, capture_output=True, text=True)
    res = subprocess.run([sys.executable, "-m", "pipeline.stages.score", "--output", env_out, "--show"],
                         check=True, cwd=ROOT, capture_output=True, text=True)
    assert "meanshape_k2_seed42" in res.stdout and "cv_ne" in res.stdout
    subprocess.run([sys.executable, "-m", "pipeline.stages.report", "--output", env_out, "--run", "tiny"] + args,
                   check=True, cwd=ROOT)
    html = (chain["out"] / "runs" / "tiny" / "report" / "index.html").read_text()
    assert "examples_dress.png" in html and "learning_curves_skirt.png" in html
    image = next((chain["data"] / "test" / "Images" / "skirt").glob("*.jpg"))
    res = subprocess.run([sys.executable, "-m", "pipeline.stages.predict_image", str(image), "--category", "skirt",
                          "--output", env_out, "--run", "tiny"] + args,
                         check=True, cwd=ROOT, capture_output=True, text=True)
    result = json.loads(res.stdout)
    assert set(result["keypoints"]) == {"waistband_left", "waistband_right", "hemline_left", "hemline_right"}


def test_report_opens_in_a_browser(chain):
    """The report in headless Chromium: every image loads, no script or console errors, standards mode."""
    from browser import chromium, open_page

    if chromium() is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    page = chain["out"] / "runs" / "tiny" / "report" / "index.html"
    if not page.exists():
        args = ["--config", str(ROOT / "configs/demo.yaml")] + sum((["--set", s] for s in TINY), [])
        subprocess.run([sys.executable, "-m", "pipeline.stages.report", "--output", str(chain["out"]), "--run", "tiny"]
                       + args, check=True, cwd=ROOT)
    seen = open_page(page)
    assert seen["images"] == page.read_text().count("<img") and seen["images"] >= 5
    assert seen["broken"] == [] and seen["errors"] == [] and not seen["quirks"]
    assert seen["tables"] == 1  # the leaderboard


def test_nan_loss_stops_and_keeps_best_checkpoint(chain, monkeypatch):
    """NaN targets → NaN loss: the run stops with a message; the best model.keras is untouched."""
    from pipeline.fit.trainer import train
    from pipeline.heatmap import codec

    fold = chain["out"] / "runs/tiny/trousers/fold1"
    best = (fold / "model.keras").read_bytes()
    history_rows = len(pd.read_csv(fold / "history.csv"))
    real_encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda *a, **k: real_encode(*a, **k) * np.nan)
    with pytest.raises(FloatingPointError, match="NaN loss"):
        train(chain["out"], tiny_config("train.epochs=4"), "tiny", "trousers", 1)
    assert (fold / "model.keras").read_bytes() == best
    assert len(pd.read_csv(fold / "history.csv")) == history_rows


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline.config import load_config
from pipeline.fit.trainer import train
cfg = load_config(sys.argv[2], sys.argv[3:] + ["train.distribute=mirrored", "train.precision=float32"])
m = train(sys.argv[1], cfg, "mirror", "skirt", 0, devices=["/cpu:0", "/cpu:1"])
print("RESULT" + json.dumps(m))
"""


def test_mirrored_strategy_over_two_cpu_replicas(chain):
    """tf.distribute by configuration: MirroredStrategy over two logical CPU devices trains."""
    from pipeline.store.rundata import bind_run, run_data

    bind_run(chain["out"], "mirror", run_data(chain["out"], "tiny"))
    res = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(chain["out"]),
                          str(ROOT / "configs/demo.yaml")] + TINY, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads(res.stdout.split("RESULT", 1)[1])
    assert metrics["replicas"] == 2
    assert metrics["global_batch"] == 2 * tiny_config().train.batch_size  # train.batch_size is per replica
    assert metrics["lr"] == pytest.approx(2 * tiny_config().train.lr)  # train.lr_scaling: linear
    assert np.isfinite(metrics["val_ne"]) and metrics["epochs"] == 2


def test_changed_config_starts_over_instead_of_resuming(chain, tmp_path):
    import shutil

    from pipeline.fit.resume import resume_key
    from pipeline.fit.trainer import train
    from pipeline.store.rundata import bind_run, run_data

    assert resume_key(tiny_config("train.epochs=9", "train.threads=1")) == resume_key(tiny_config())
    assert resume_key(tiny_config("augment.rotation=5")) != resume_key(tiny_config())
    assert resume_key(tiny_config(), {"dataset": "a"}) != resume_key(tiny_config(), {"dataset": "b"})
    out = tmp_path / "output"
    shutil.copytree(chain["out"] / "prep", out / "prep")
    bind_run(out, "cfgchange", dataclasses.replace(run_data(chain["out"], "tiny"), output=out))
    train(out, tiny_config("train.epochs=1"), "cfgchange", "skirt", 0)
    m = train(out, tiny_config("train.epochs=1", "codec.sigma=2.0"), "cfgchange", "skirt", 0)
    fold = out / "runs/cfgchange/skirt/fold0"
    hist = pd.read_csv(fold / "history.csv")
    assert list(hist["epoch"]) == [0] and m["epochs"] == 1  # retrained from scratch, not appended
    import yaml
    assert yaml.safe_load((fold / "config.yaml").read_text())["codec"]["sigma"] == 2.0
