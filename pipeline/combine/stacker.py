"""LightGBM level-2 stacker: corrections to the averaged keypoints.

Per category and keypoint, two LightGBM regressors predict the correction
(dx, dy) to the ensemble's prediction in units of the image's *predicted*
normalizer distance (armpits / waistband of the prediction: the truth is
unknown at test time). Features come from the OOF predictions: each member's
TTA variants (plain, mirror, heatmap- and coordinate-merged) relative to the
ensemble, heatmap peak value and sharpness, distance to and height of the
second peak, flip disagreement, spread across members and variants, the
other predicted keypoints of the image relative to this one, and image size.
(Models are per category, so the category is implicit.)

Honest validation: nested CV on the stored folds. The corrections of fold f
come from a stacker fitted on the OOF rows of the other folds only, so it
never sees the labels of the rows it corrects; its CV NE is computed exactly
like the ensemble's. The test-time stacker is fitted on all OOF rows. Its test
features are built exactly like the OOF ones, from single fold models: for each
fold f, the fold-f models' test predictions (averaged over members) are
corrected from their own features, and the k corrected predictions are
averaged (fold-averaged features would have a smaller spread and flip
disagreement than any the stacker was fitted on; docs/decisions.md).

Writes runs/<name>/<cat>/oof_stack.csv and test_stack.csv, the test-time boosters
runs/<name>/<cat>/stacker.json (LightGBM model text; `apply_stacker` is the one test-time
path, of `make stack` and of exported bundles), runs/<name>/stack.json
(CV NE of both, the relative gain and whether the submission uses the
stacker: `stack.mode` on | off | auto — auto uses it only when it beats
plain averaging), and runs/<name>/report/stack_importance.png.

CLI: python -m pipeline.stages.stack --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.fsutil import write_text_atomic
from pipeline.keypoints import (
    CATEGORY_KEYPOINTS,
    category_indices,
    normalizer_local_indices,
)
from pipeline.store.layout import (
    category_csv,
    fold_dir,
    report_dir,
    run_dir,
    run_file,
    stacker_path,
)
from pipeline.store.predictions import load_npz, read_category_csv, write_category_csv
from pipeline.store.records import is_current, write_record
from pipeline.store.rundata import run_data

VARIANTS = ("xy_plain", "xy_mirror", "xy_heatmap", "xy_coords")
PEAK_FEATURES = ("score", "sharpness", "peak2_val", "peak2_dist")


def _align(ids: np.ndarray, arrays: Dict[str, np.ndarray], wanted: np.ndarray, what: str) -> Dict[str, np.ndarray]:
    pos = pd.Series(np.arange(len(ids)), index=ids)
    missing = set(wanted) - set(ids)
    if missing:
        raise ValueError(f"{what}: no prediction for {len(missing)} image(s), e.g. {sorted(missing)[0]}")
    order = pos.loc[wanted].to_numpy()
    return {k: v[order] for k, v in arrays.items()}


def stack_arrays(pred: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """One fold model's predictions (predict.predict_category's arrays, or a prediction file) with
    every feature the stacker reads: without flip TTA the plain pass stands in for the variants."""
    pred = dict(pred)
    for key in list(VARIANTS) + list(PEAK_FEATURES):
        if key not in pred:
            pred[key] = pred["xy_plain"] if key.startswith("xy_") else np.zeros(pred["score"].shape)
    return pred


def member_arrays(output, member: str, category: str, folds: Sequence[int], split: str, wanted: np.ndarray,
                  fold: int = None) -> Dict:
    """A member's variants and peak features aligned with `wanted` ids.

    split "oof": each image's held-out fold model (one single model per image);
    "test": the predictions of the fold-`fold` model alone — the same single-model
    construction as the OOF features the stacker is fitted on.
    """
    keys = [v for v in VARIANTS] + list(PEAK_FEATURES)
    folds = list(folds) if split == "oof" else [fold]
    parts = [stack_arrays(load_npz(fold_dir(output, member, category, f) / f"{split}.npz")) for f in folds]
    ids = np.concatenate([p["image_id"] for p in parts])
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in keys + ["xy"]}
    return _align(ids, arrays, wanted, f"{split} of {member}/{category}")


def predicted_normalizer(xy: np.ndarray, sizes: np.ndarray, category: str) -> np.ndarray:
    """Distance between the predicted normalizer points (M,), floored at 2 % of the image side."""
    a, b = normalizer_local_indices(category)
    dist = np.hypot(*(xy[:, a] - xy[:, b]).T)
    return np.maximum(dist, 0.02 * sizes.max(1))


def features(ens_xy: np.ndarray, members: Sequence[Dict], sizes: np.ndarray, category: str
             ) -> Tuple[List[np.ndarray], List[str], np.ndarray]:
    """Feature matrices, one (M, F) per keypoint of the category, their names, and s_hat (M,)."""
    s_hat = predicted_normalizer(ens_xy, sizes, category)
    names = CATEGORY_KEYPOINTS[category]
    mats = []
    for k in range(len(names)):
        cols, col_names = [], []
        all_xy = []
        for m, arrays in enumerate(members):
            for v in VARIANTS:
                rel = (arrays[v][:, k] - ens_xy[:, k]) / s_hat[:, None]
                cols += [rel[:, 0], rel[:, 1]]
                col_names += [f"m{m}_{v}_dx", f"m{m}_{v}_dy"]
                all_xy.append(arrays[v][:, k])
            for f in PEAK_FEATURES:
                cols.append(arrays[f][:, k])
                col_names.append(f"m{m}_{f}")
            cols.append(np.hypot(*(arrays["xy_plain"][:, k] - arrays["xy_mirror"][:, k]).T) / s_hat)
            col_names.append(f"m{m}_flip_disagreement")
        spread = np.stack(all_xy).std(0).mean(-1) / s_hat
        cols.append(spread)
        col_names.append("spread")
        for j, other in enumerate(names):
            if j != k:
                rel = (ens_xy[:, j] - ens_xy[:, k]) / s_hat[:, None]
                cols += [rel[:, 0], rel[:, 1]]
                col_names += [f"rel_{other}_x", f"rel_{other}_y"]
        cols += [sizes[:, 0].astype(float), sizes[:, 1].astype(float), s_hat / sizes.max(1)]
        col_names += ["width", "height", "s_hat_rel"]
        mats.append(np.stack(cols, 1))
    return mats, col_names, s_hat


def _fit_predict(x_fit, y_fit, x_apply, cfg: Config):
    """Fit dx and dy regressors; return (corrections (N, 2) scaled by stack.shrink, gain importances (F,),
    the two fitted boosters as LightGBM model text, or None when too few rows were fitted)."""
    import lightgbm as lgb

    out = np.zeros((len(x_apply), 2))
    importance = np.zeros(x_fit.shape[1])
    if len(x_fit) < 20:
        return out, importance, None
    texts = []
    for axis in range(2):
        model = lgb.LGBMRegressor(objective=cfg.stack.objective, n_estimators=cfg.stack.n_estimators,
                                  learning_rate=cfg.stack.learning_rate, num_leaves=cfg.stack.num_leaves,
                                  min_child_samples=cfg.stack.min_child_samples, subsample=0.8, subsample_freq=1,
                                  colsample_bytree=cfg.stack.colsample, reg_lambda=1.0, n_jobs=1,
                                  random_state=cfg.train.seed, verbose=-1)
        model.fit(x_fit, y_fit[:, axis])
        if len(x_apply):
            out[:, axis] = cfg.stack.shrink * model.predict(x_apply)
        importance += model.booster_.feature_importance("gain")
        texts.append(model.booster_.model_to_string())
    return out, importance, texts


def _keypoint_job(k, x_train, y_train, has_truth, folds, fold_ids, cfg):
    """Nested-CV OOF corrections and the full-fit (test-time) boosters of one keypoint
    (folds (M,): each row's fold, one of `fold_ids`)."""
    oof = np.zeros((len(x_train), 2))
    for f in fold_ids:
        fit = (folds != f) & has_truth
        apply = folds == f
        oof[apply], _, _ = _fit_predict(x_train[fit], y_train[fit], x_train[apply], cfg)
    _, importance, texts = _fit_predict(x_train[has_truth], y_train[has_truth], x_train[:0], cfg)
    return k, oof, texts, importance


def load_stacker(path) -> Dict:
    """{"shrink": float, "keypoints": [None | [dx booster, dy booster]]} from a stacker.json
    (boosters rebuilt from their LightGBM model text)."""
    import lightgbm as lgb

    saved = json.loads(Path(path).read_text())
    return {"shrink": saved["shrink"],
            "keypoints": [None if t is None else [lgb.Booster(model_str=s) for s in t] for t in saved["keypoints"]]}


def apply_stacker(stacker: Dict, fold_members: Sequence[Sequence[Dict]], sizes: np.ndarray,
                  category: str) -> np.ndarray:
    """Stacked test keypoints (M, K, 2), original pixels, from single fold models' predictions.

    fold_members[f][m]: member m's fold-f arrays (`xy`, VARIANTS, PEAK_FEATURES, each (M, K[, 2]))
    for the M images of `category`, sizes (M, 2). Per fold the members' `xy` are averaged and
    corrected from the features of those same single models (as the OOF rows the stacker was
    fitted on); the corrected folds are averaged. The one test-time path of `make stack` and of
    exported bundles (pipeline/release/bundle.py).
    """
    corrected = []
    for members in fold_members:
        f_xy = np.mean([a["xy"] for a in members], axis=0)
        x_f, _, s_f = features(f_xy, members, sizes, category)
        for j, boosters in enumerate(stacker["keypoints"]):
            if boosters is not None and len(f_xy):
                corr = np.stack([stacker["shrink"] * b.predict(x_f[j]) for b in boosters], 1)
                f_xy[:, j] += corr * s_f[:, None]
        corrected.append(f_xy)
    return np.mean(corrected, axis=0)


def stack_category(output, cfg: Config, name: str, members: Sequence[str], category: str, train, folds,
                   fold_ids: Sequence[int], test=None) -> Dict:
    """Nested-CV stacker of one category over its model folds `fold_ids` (train: the images of those
    folds, RunData.oof_index; folds: their folds); writes oof_stack.csv and test_stack.csv."""
    from joblib import Parallel, delayed

    mask = train.category == category
    ids = train.image_id[mask]
    sizes = train.sizes[mask]
    truth = train.keypoints[mask][:, category_indices(category)]
    fold_of = folds[mask]
    _, ens_xy, ens_score = read_category_csv(category_csv(output, name, category, "oof"), category)
    oof_members = [member_arrays(output, m, category, fold_ids, "oof", ids) for m in members]
    x_train, col_names, s_hat = features(ens_xy, oof_members, sizes, category)
    jobs = []
    for j in range(truth.shape[1]):
        has_truth = truth[:, j, 2] >= 0
        y = (truth[:, j, :2] - ens_xy[:, j]) / s_hat[:, None]
        jobs.append(delayed(_keypoint_job)(j, x_train[j], y, has_truth, fold_of, fold_ids, cfg))
    results = Parallel(n_jobs=cfg.stack.jobs)(jobs)
    oof_xy = ens_xy.copy()
    importance = np.zeros(len(col_names))
    boosters = [None] * truth.shape[1]
    for j, oof_corr, texts, imp in results:
        oof_xy[:, j] += oof_corr * s_hat[:, None]
        boosters[j] = texts
        importance += imp / max(imp.sum(), 1e-12)
    write_text_atomic(stacker_path(output, name, category),
                      json.dumps({"shrink": cfg.stack.shrink, "keypoints": boosters}))
    write_category_csv(run_dir(output, name) / category / "oof_stack.csv", ids, category, oof_xy, ens_score)
    if test is not None:
        # per fold: the fold-f models' test predictions, averaged over members, are corrected from
        # features of those same single models (as in OOF); the corrected folds are then averaged
        t_mask = test.category == category
        t_ids, _, t_score = read_category_csv(category_csv(output, name, category, "test"), category)
        fold_members = [[member_arrays(output, m, category, fold_ids, "test", t_ids, fold=f) for m in members]
                        for f in fold_ids]
        t_xy = apply_stacker(load_stacker(stacker_path(output, name, category)), fold_members,
                             test.sizes[t_mask], category)
        write_category_csv(category_csv(output, name, category, "test", True), t_ids, category, t_xy, t_score)
    return {"importance": pd.Series(importance, index=col_names)}


def plot_importance(importance: pd.Series, path: Path, top: int = 20) -> None:
    from pipeline.scoring.plots import pyplot, save_figure

    plt = pyplot()
    imp = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1))
    ax.barh(imp.index, imp.values, color="darkorange")
    ax.set(xlabel="relative gain (summed over keypoints and categories)", title="Stacker feature importance")
    save_figure(fig, path)


def _generic(name: str) -> str:
    """Feature name with the keypoint-specific part folded (rel_<kp>_x → rel_x)."""
    return "rel_other_" + name[-1] if name.startswith("rel_") else name


def run_stack(output, cfg: Config, name: str, members: Sequence[str]) -> Dict:
    """Fit the stacker for every category of the ensemble `name`; write stack.json (and the plot).

    Skipped when stack.json records the same stack settings and the same ensemble inputs.
    """
    from tqdm import tqdm

    from pipeline.scoring.leaderboard import categories_ne, oof_predictions

    record = run_file(output, name, "stack")
    inputs = stack_inputs(output, cfg, name)
    if cfg.stack.mode == "off":  # the record says so; the submission uses plain averaging
        if not is_current(record, inputs):
            write_record(record, inputs, mode="off", use_stack=False)
        return json.loads(record.read_text())
    stackers = [stacker_path(output, name, c) for c in ensemble_categories(output, name)]
    if is_current(record, inputs, stackers):
        result = json.loads(record.read_text())
        print(f"stack {name}: up to date")
        return result
    prep = run_data(output, name)
    train = prep.oof_index()
    folds = prep.folds(train.image_id)
    test = prep.test_index()
    categories = ensemble_categories(output, name)
    total = None
    for cat in tqdm(categories, desc="stack", unit="category"):
        imp = stack_category(output, cfg, name, members, cat, train, folds, prep.fold_ids, test)["importance"]
        imp = imp.groupby(_generic).sum()
        total = imp if total is None else total.add(imp, fill_value=0)
    plain = categories_ne(train.keypoints, oof_predictions(output, name, train, categories=categories),
                          train.category, categories)["ne"]
    stacked = categories_ne(train.keypoints, oof_predictions(output, name, train, "_stack", categories),
                            train.category, categories)["ne"]
    gain = (plain - stacked) / plain
    use = cfg.stack.mode == "on" or (cfg.stack.mode == "auto" and gain > cfg.stack.min_gain)
    result = {"cv_ne_plain": plain, "cv_ne_stack": stacked, "relative_gain": gain, "mode": cfg.stack.mode,
              "use_stack": bool(use), "members": list(members)}
    plot_importance(total, report_dir(output, name) / "stack_importance.png")
    write_record(record, inputs, stackers, **result)
    return result


def stack_inputs(output, cfg: Config, name: str) -> Dict:
    """What stack.json depends on: the stack settings and the ensemble's own recorded inputs."""
    from pipeline.store.records import digest, read_record

    ens = read_record(run_file(output, name, "ensemble"))
    if ens is None:
        raise FileNotFoundError(f"{run_dir(output, name) / 'ensemble.json'} missing: run `make ensemble` first")
    return {"settings": cfg.stage_settings("stack"), "ensemble": digest(ens["inputs"])}


def ensemble_categories(output, name: str) -> List[str]:
    """The categories the ensemble `name` covers (from its ensemble.json)."""
    from pipeline.store.records import read_record

    return list(read_record(run_file(output, name, "ensemble"))["categories"])
