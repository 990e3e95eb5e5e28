"""Predict: out-of-fold and test predictions of every (category, fold) model.

Each image and its mirror go through the model in one batch; the mirror's
heatmaps are flipped back with the left/right channels swapped (tta.py) and
combined with the plain ones, by heatmap averaging or coordinate averaging
(`predict.merge`). With `predict.scales` (multi-scale TTA) every scale is one
more such pass on the image rescaled about its centre, mapped back to the base
frame by codec's helpers, and merged the same way. Both merges and the plain pass are stored, and their OOF
NE is written to `predict.json`, so the choice is measured, not assumed.

Writes OUTPUT/runs/<run>/<cat>/fold<k>/oof.npz and test.npz with `image_id`,
`xy` (M, K, 2 float, original pixels, the configured merge), `score`, and the
variants `xy_plain`, `xy_mirror`, `xy_heatmap`, `xy_coords` plus peak
features (`peak2_val`, `peak2_dist`, `sharpness`) for the stacker.

CLI: python -m pipeline.stages.predict --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict

import numpy as np
import pandas as pd

from pipeline import joint
from pipeline.config import Config
from pipeline.heatmap import codec
from pipeline.heatmap.inference import load_model, predict_category
from pipeline.scoring.metrics import category_ne
from pipeline.store.layout import MODEL_FILES, fold_dir, model_file, run_file
from pipeline.store.predictions import save_npz
from pipeline.store.records import (
    digest,
    file_id,
    is_current,
    read_record,
    write_record,
)
from pipeline.store.rundata import RunData, run_data


def _variant_ne(pred: Dict[str, np.ndarray], truth: np.ndarray, category: str) -> Dict[str, float]:
    return {name.replace("xy_", "ne_"): category_ne(truth, pred[name], category)
            for name in ("xy_plain", "xy_mirror", "xy_heatmap", "xy_coords", "xy_pass1", "xy_box1")
            if name in pred}


def predict_inputs(cfg: Config, prep: RunData, model_path: Path) -> Dict:
    """What a fold's predictions depend on: the predict settings, the model file, the prep artifacts."""
    return {"settings": cfg.stage_settings("predict"), "model": file_id(model_path), "prep": prep.identity()}


def predict_fold(output, cfg: Config, run: str, category: str, fold: int, prep: RunData, train_index,
                 folds: np.ndarray, test_index=None, force: bool = False) -> Dict:
    """OOF and test predictions of one fold model; returns the OOF NE of each variant.

    Skipped (nothing rewritten) when predict.json records the same inputs: the same
    model file, prep artifacts and predict settings (`Config.stage_settings("predict")`), the
    category's own (`cfg.for_category`: its `categories:` overrides apply).
    """
    cfg = cfg.for_category(category)
    out = fold_dir(output, run, category, fold)
    model_name = joint.model_for(cfg, category)  # a joint run's model predicts every category
    model_path = model_file(output, run, model_name, fold, "model")
    if not model_path.exists():
        raise FileNotFoundError(f"missing model {model_path} (run `make train-all` first)")
    inputs = predict_inputs(cfg, prep, model_path)
    outputs = [out / "oof.npz"] + ([out / "test.npz"] if test_index is not None else [])
    if not force and is_current(out / MODEL_FILES["predict"], inputs, outputs):
        return json.loads((out / MODEL_FILES["predict"]).read_text())["report"]
    model = load_model(model_path)
    size = cfg.cache_size
    val = (train_index.category == category) & (folds == fold)
    cache = prep.cache("train")
    images = np.stack([cache[r] for r in train_index.cache_row[val]])
    pred = predict_category(model, model_name, category, images, train_index.params[val], train_index.sizes[val],
                            cfg, return_heatmaps=True)
    heatmaps = pred.pop("heatmaps")
    in_params = pred.pop("crop_params", train_index.params[val])  # the frame the heatmaps are in
    save_npz(out / "oof.npz", image_id=train_index.image_id[val], **pred)
    truth = train_index.keypoints[val]
    report = _variant_ne(pred, truth, category)
    decoder = codec.Codec.from_config(cfg)
    for refine in ("none", "quarter", "dark"):  # the decoding choice, measured on the same heatmaps
        xy, _ = dataclasses.replace(decoder, refine=refine).decode_to_original(heatmaps, in_params)
        report[f"ne_refine_{refine}"] = category_ne(truth, xy, category)
    if test_index is not None:
        t_mask = test_index.category == category
        t_cache = prep.cache("test")
        t_images = np.stack([t_cache[r] for r in test_index.cache_row[t_mask]]) if t_mask.any() \
            else np.zeros((0, size, size, 3), np.uint8)
        t_pred = predict_category(model, model_name, category, t_images, test_index.params[t_mask],
                                  test_index.sizes[t_mask], cfg)
        t_pred.pop("crop_params", None)
        save_npz(out / "test.npz", image_id=test_index.image_id[t_mask], **t_pred)
    report["merge"] = cfg.predict.merge
    report["flip_tta"] = cfg.predict.flip_tta
    write_record(out / MODEL_FILES["predict"], inputs, outputs, report=report)  # last: marks the fold's predictions complete
    return report


def run_predict(output, cfg: Config, run: str, force: bool = False) -> pd.DataFrame:
    prep = run_data(output, run, cfg)
    train_index = prep.train_index()
    folds = prep.folds(train_index.image_id)
    test_index = prep.test_index()
    rows = []
    from tqdm import tqdm

    jobs = [(c, f) for c in cfg.data.categories for f in prep.fold_ids]
    fold_inputs = {}
    for cat, fold in tqdm(jobs, desc="predict", unit="model"):
        report = predict_fold(output, cfg, run, cat, fold, prep, train_index, folds, test_index, force)
        rows.append({"category": cat, "fold": fold, **report})
        fold_inputs[f"{cat}/fold{fold}"] = digest(read_record(model_file(output, run, cat, fold, "predict"))["inputs"])
    table = pd.DataFrame(rows)
    # the run's summary record (make's target): current when every fold's predictions are
    record = run_file(output, run, "predictions")
    if not is_current(record, fold_inputs):
        write_record(record, fold_inputs, folds=rows)
    return table
