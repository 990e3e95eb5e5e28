"""configs/full.yaml end to end on tiny data (CPU): the GPU config as shipped — ResNet50-FPN
features, 3 CPM stages of width 128, 5 folds' worth of settings — only shrunk where it must be
(64-px input, no ImageNet download, one category, 2 folds, 2 steps): train, reload, predict,
ensemble, submit (validated, other categories from the mean-shape fallback)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from conftest import REPO as ROOT  # noqa: E402

from pipeline.config import load_config
from pipeline.tools import synth

SMALL = ["model.input_size=64", "model.weights=null", "data.categories=[skirt]", "data.folds=2",
         "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.threads=2",
         "predict.batch_size=8", "stack.mode=off"]


def test_full_config_trains_reloads_predicts_and_submits(tmp_path):
    import keras

    from pipeline.joint import baseline_name
    from pipeline.stages import baseline
    from pipeline.combine.average import run_ensemble
    from pipeline.fit.trainer import train
    from pipeline.heatmap.oof import run_predict
    from pipeline.prep.preprocess import preprocess
    from pipeline.scoring.submission import submit_run, validate
    from pipeline.store.rundata import run_data

    cfg = load_config(ROOT / "configs" / "full.yaml", SMALL)
    full = load_config(ROOT / "configs" / "full.yaml")
    assert (cfg.model.backbone, cfg.model.stages, cfg.model.width, cfg.model.stride) == \
        (full.model.backbone, full.model.stages, full.model.width, full.model.stride) == ("resnet50", 3, 128, 4)
    data, out = tmp_path / "input", tmp_path / "output"
    synth.generate(data, train_per_cat=4, test_per_cat=2, seed=11, jobs=1, progress=False)
    preprocess(data, out, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=1,
               margin=cfg.model.margin, run="full")
    args = ["--output", str(out), "--run", "full", "--config", str(ROOT / "configs" / "full.yaml")]
    assert baseline.main(args + sum((["--set", s] for s in SMALL), [])) == 0  # the default fallback

    for fold in range(cfg.data.folds):
        metrics = train(out, cfg, "full", "skirt", fold)
        assert metrics["epochs"] == 1 and np.isfinite(metrics["val_ne"])
        assert metrics["params"] > 5_000_000  # the ResNet50 trunk, not the demo's small stem

    model_path = out / "runs/full/skirt/fold0/model.keras"
    model = keras.models.load_model(model_path, compile=False)  # stock Keras, no custom objects
    assert any(layer.name == "backbone_resnet50" for layer in model.layers)
    assert model.output_shape == (None, cfg.model.stages, 16, 16, 4)

    table = run_predict(out, cfg, "full")
    assert set(table["category"]) == {"skirt"}
    oof = np.load(out / "runs/full/skirt/fold1/oof.npz", allow_pickle=True)
    assert oof["xy"].shape[1:] == (4, 2) and np.isfinite(oof["xy"]).all()

    run_ensemble(out, "full", ["full"], cfg.data.categories)
    ens = pd.read_csv(out / "runs/full/skirt/oof.csv")
    train_index = run_data(out, "full").train_index()
    assert sorted(ens["image_id"]) == sorted(train_index.image_id[train_index.category == "skirt"])

    fallback = cfg.submit.fallback or baseline_name(cfg)  # as `make submit` picks it
    record = submit_run(out, "full", cfg.data.categories, fallback)
    assert record["plan"] == {"full": ["skirt"], fallback: ["blouse", "dress", "outwear", "trousers"]}
    sub = out / "runs/full/submission.csv"
    assert validate(sub, data / "test" / "test.csv") == []
    rows = pd.read_csv(sub)
    assert len(rows) == len(pd.read_csv(data / "test" / "test.csv"))
    assert json.loads((out / "runs/full/skirt/fold0/metrics.json").read_text())["replicas"] == 1
