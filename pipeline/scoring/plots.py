"""Report: pictures a person would rather look at than read.

* predictions drawn on images — best and worst OOF images per category,
  ground truth (green) beside prediction (red);
* learning curves per category (val NE and loss per epoch, one line per fold);
* per-keypoint CV NE bars;
* the leaderboard and any extra PNG in the report folder (e.g. the
  stacker's feature importance) in OUTPUT/runs/<run>/report/index.html.

CLI: python -m pipeline.stages.report --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd

from pipeline.fsutil import atomic_path, write_text_atomic
from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX
from pipeline.scoring.metrics import point_errors
from pipeline.store.layout import model_file, run_file
from pipeline.store.layout import report_dir as layout_report_dir


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


def _read_rgb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return np.zeros((64, 64, 3), np.uint8) if img is None else img[:, :, ::-1]


def plot_examples(train, pred_full: np.ndarray, category: str, path: Path, n: int = 3) -> Path:
    """Best and worst OOF images of a category: truth (green) and prediction (red)."""
    plt = pyplot()
    mask = train.category == category
    err = point_errors(train.keypoints[mask], pred_full[mask], train.category[mask])
    counted = np.isfinite(err)
    per_image = np.where(counted, err, 0).sum(1) / np.where(counted.any(1), counted.sum(1), np.nan)
    order = np.argsort(np.where(np.isfinite(per_image), per_image, np.inf))
    valid = order[np.isfinite(per_image[order])]
    picks = list(valid[:n]) + list(valid[::-1][:n])
    cols = [KEYPOINT_INDEX[k] for k in CATEGORY_KEYPOINTS[category]]
    rows = np.nonzero(mask)[0]
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6))
    for ax, pick, title in zip(axes.ravel(), picks, ["best"] * n + ["worst"] * n):
        i = rows[pick]
        ax.imshow(_read_rgb(train.frame["file"].iloc[i]))
        truth = train.keypoints[i, cols]
        pred = pred_full[i, cols]
        seen = truth[:, 2] >= 0
        ax.scatter(truth[seen, 0], truth[seen, 1], s=14, c="lime", edgecolors="k", linewidths=0.5)
        ax.scatter(pred[:, 0], pred[:, 1], s=14, c="red", marker="x")
        for t, p, s in zip(truth, pred, seen):
            if s:
                ax.plot([t[0], p[0]], [t[1], p[1]], c="yellow", lw=0.6)
        ax.set_title(f"{title}: NE {per_image[pick]:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{category}: ground truth (green) vs prediction (red)")
    return save_figure(fig, path)


def plot_learning_curves(output, run: str, category: str, k: int, path: Path) -> Path:
    """val NE and training loss per epoch, one line per fold."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for f in range(k):
        hist_path = model_file(output, run, category, f, "history")
        if not hist_path.exists():
            continue
        hist = pd.read_csv(hist_path)
        a1.plot(hist["epoch"] + 1, hist["val_ne"], marker=".", label=f"fold {f}")
        a2.plot(hist["epoch"] + 1, hist["loss"], marker=".", label=f"fold {f}")
    a1.set(title=f"{category}: validation NE", xlabel="epoch", ylabel="NE")
    a2.set(title="training loss", xlabel="epoch", yscale="log")
    a1.legend(fontsize=8)
    return save_figure(fig, path)


def plot_keypoint_bars(scores: dict, path: Path, title: str) -> Path:
    """Per-keypoint CV NE as horizontal bars."""
    plt = pyplot()
    per_kp = scores["cv"]["per_keypoint"]
    names = list(per_kp)
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(names) + 1))
    ax.barh(names, [per_kp[n] for n in names], color="steelblue")
    ax.invert_yaxis()
    ax.set(xlabel="CV NE", title=title)
    return save_figure(fig, path)


def write_index(report_dir: Path, images: List[Path], leaderboard: Path) -> Path:
    board = pd.read_csv(leaderboard).to_html(index=False, float_format=lambda v: f"{v:.4f}",
                                             na_rep="-") if leaderboard.exists() else "<p>no leaderboard yet</p>"
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'><title>FashionAI keypoints report</title>",
             "<style>body{font-family:sans-serif;margin:20px} img{max-width:100%;margin:8px 0}"
             " table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>",
             "<h1>FashionAI keypoint pipeline report</h1><h2>Leaderboard</h2>", board]
    for img in images:
        parts.append(f"<h3>{html.escape(img.stem.replace('_', ' '))}</h3><img src='{html.escape(img.name)}'>")
    parts.append("</body></html>")
    path = report_dir / "index.html"
    write_text_atomic(path, "\n".join(parts))
    return path


def run_report(output, run: str, k: int, categories, models=None) -> Path:
    """Plots and index.html of run `run` in runs/<run>/report/ (the leaderboard shown is OUTPUT's).

    models: the trained models whose learning curves are drawn (joint.model_names; default the
    categories)."""
    from pipeline.scoring.leaderboard import oof_predictions
    from pipeline.store.rundata import run_data

    output = Path(output)
    report_dir = layout_report_dir(output, run)
    report_dir.mkdir(parents=True, exist_ok=True)
    train = run_data(output, run).oof_index()
    images: List[Path] = []
    scores_path = run_file(output, run, "scores")
    if scores_path.exists():
        images.append(plot_keypoint_bars(json.loads(scores_path.read_text()),
                                         report_dir / f"keypoint_ne_{run}.png", f"{run}: CV NE per keypoint"))
    pred = oof_predictions(output, run, train, categories=categories)
    for cat in categories:
        images.append(plot_examples(train, pred, cat, report_dir / f"examples_{cat}.png"))
    for name in models or categories:
        images.append(plot_learning_curves(output, run, name, k, report_dir / f"learning_curves_{name}.png"))
    images += sorted(p for p in report_dir.glob("*.png") if p not in images)
    return write_index(report_dir, images, output / "leaderboard.csv")
