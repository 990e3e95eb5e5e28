"""Fit `real_model.json` (see `real_model`) from real annotation rows, so the shipped numbers
are reproducible. Only fitted numbers are written, never a row.

    python -m pipeline.tools.synth.fit_real --ann ROUND1_TRAIN.csv [--images SPLIT_DIR ...]
        [--out pipeline/tools/synth/real_model.json] [--calibrate N]
    python -m pipeline.tools.synth.fit_real --calibrate N           (re-measure the generator only)

--ann: the annotation rows the layouts, absence patterns and occlusion rates are fitted on.
--images: split directories in the competition layout (DIR/Annotations/*.csv, DIR/Images/...)
  whose photos give the image-size mix and, with their rows, the framing (box area over the
  real image area, box position); without them the framing comes from --ann with 512x512
  images assumed and every image is 512x512.
--calibrate N: then render N images per category with the new model and store how often the
  drawing itself covers each keypoint (`render_occluded`), which the generator tops up to the
  real occlusion rates. Re-run it (`--calibrate N` alone) whenever the drawing changes.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, category_indices
from pipeline.tianchi import read_annotations
from pipeline.tools.synth.real_model import MODEL_PATH

#: Quantile levels stored for the framing distributions (sampling stays within them).
LEVELS = (0.005, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65,
          0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.995)
#: Layout PCA: components kept until this share of the variance is explained (at most MAX_COMP).
EXPLAINED = 0.97
MAX_COMP = 12
#: Keypoint triples turning the same way in at least this share of the rows become constraints
#: of the drawn layouts (the Gaussian PCA alone puts e.g. center_front above the neckline in
#: 9 % of its blouses, against 1.5 % of real rows).
ORIENTATION = 0.98
#: Absence patterns rarer than this share of a category's rows are dropped (then renormalised).
MIN_PATTERN = 0.001
#: Image sizes kept by name in the mix (the rest is spread over the kept non-512 sizes).
MAX_SIZES = 24


def _r(x, nd: int = 5):
    return np.round(np.asarray(x, np.float64), nd).tolist()


def normalised_layouts(kps: np.ndarray):
    """(N, K, 3) rows of one category -> (M, K, 2) layouts (NaN where absent), row mask (N,).

    Each row is centred on the box of its annotated points and divided by the square root
    of that box's area; rows with under three annotated points or a flat box are skipped.
    """
    out, keep = [], np.zeros(len(kps), bool)
    for i, k in enumerate(kps.astype(np.float64)):
        ok = k[:, 2] >= 0
        if ok.sum() < 3:
            continue
        lo, hi = k[ok, :2].min(0), k[ok, :2].max(0)
        bw, bh = hi - lo
        if bw < 2 or bh < 2:
            continue
        xy = (k[:, :2] - (lo + hi) / 2) / np.sqrt(bw * bh)
        xy[~ok] = np.nan
        out.append(xy)
        keep[i] = True
    return np.array(out), keep


def fit_pca(layouts: np.ndarray, iters: int = 25) -> Dict:
    """Probabilistic PCA of (M, K, 2) layouts with NaN holes (imputed by iterated PCA)."""
    m, k, _ = layouts.shape
    x = layouts.reshape(m, 2 * k)
    seen = np.isfinite(x)
    mu = np.nanmean(x, 0)
    y = np.where(seen, x, mu)
    q_fill = min(MAX_COMP, 2 * k - 1)
    for _ in range(iters):
        mu = y.mean(0)
        u, s, vt = np.linalg.svd(y - mu, full_matrices=False)
        rec = mu + (u[:, :q_fill] * s[:q_fill]) @ vt[:q_fill]
        y = np.where(seen, x, rec)
    mu = y.mean(0)
    _, s, vt = np.linalg.svd(y - mu, full_matrices=False)
    var = s ** 2 / max(m - 1, 1)
    share = np.cumsum(var) / var.sum()
    q = int(min(MAX_COMP, max(2, np.searchsorted(share, EXPLAINED) + 1)))
    residual = float(var[q:].sum() / (2 * k))
    return {"mean": _r(mu.reshape(k, 2)), "components": _r(vt[:q]), "variances": _r(var[:q], 7),
            "residual": round(residual, 8), "explained": round(float(share[q - 1]), 4),
            "rows": int(m)}


def orientations(layouts: np.ndarray, names: Sequence[str], share: float = ORIENTATION) -> List:
    """[a, b, c, sign] for every keypoint triple whose turn a -> b -> c has the same sign
    (+1: clockwise on screen, y down) in at least `share` of the rows holding all three
    (e.g. center_front below the line through the neckline points)."""
    out = []
    for i, j, k in itertools.combinations(range(layouts.shape[1]), 3):
        o = _turn(layouts, i, j, k)
        ok = np.isfinite(o)
        if ok.sum() < 100:
            continue
        p = float(np.mean(o[ok] > 0))
        if p >= share or p <= 1 - share:
            out.append([names[i], names[j], names[k], 1 if p >= share else -1])
    return out


def _turn(x: np.ndarray, i: int, j: int, k: int) -> np.ndarray:
    a, b, c = x[..., i, :], x[..., j, :], x[..., k, :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - \
        (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def absence_patterns(v: np.ndarray, names: Sequence[str]) -> List:
    """[[absent keypoint names], probability] per joint pattern of a category's (N, K) flags."""
    counts = collections.Counter(tuple(np.flatnonzero(row < 0)) for row in v)
    n = len(v)
    kept = [(p, c) for p, c in counts.most_common() if c / n >= MIN_PATTERN or p == ()]
    total = sum(c for _, c in kept)
    return [[[names[i] for i in p], round(c / total, 5)] for p, c in kept]


def _box_stats(kps: np.ndarray, sizes: np.ndarray):
    """Per row: box area / image area, box position in the free space along x and y."""
    area, px, py = [], [], []
    for k, (w, h) in zip(kps.astype(np.float64), sizes):
        ok = k[:, 2] >= 0
        if ok.sum() < 2:
            continue
        lo, hi = k[ok, :2].min(0), k[ok, :2].max(0)
        bw, bh = hi - lo
        area.append(bw * bh / (w * h))
        if w - bw >= 8:
            px.append(np.clip(lo[0] / (w - 1 - bw), 0, 1))
        if h - bh >= 8:
            py.append(np.clip(lo[1] / (h - 1 - bh), 0, 1))
    return np.array(area), np.array(px), np.array(py)


def read_sizes(split_dir: Path, image_ids: Sequence[str]) -> np.ndarray:
    """(N, 2) width, height of each image, read from its header."""
    from pipeline.tools.synth.dataset import image_size

    return np.array([image_size(split_dir / i) for i in image_ids], np.float64).reshape(-1, 2)


def load_split(split_dir: Path):
    """(table, sizes) of a split directory in the competition layout."""
    csvs = sorted((split_dir / "Annotations").glob("*.csv"))
    if not csvs:
        raise FileNotFoundError(f"{split_dir}/Annotations: no CSV")
    table, problems = read_annotations(csvs[0])
    if problems:
        raise ValueError(f"{csvs[0]}: {problems[0]}")
    return table, read_sizes(split_dir, table.image_id)


def size_mix(sizes: np.ndarray):
    """([width, height, probability] of the MAX_SIZES commonest sizes, the non-512 share); the
    other sizes' mass goes to the kept non-512 sizes, so that the non-512 share is kept."""
    names, counts = np.unique([f"{int(w)}x{int(h)}" for w, h in sizes], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    n = counts.sum()
    kept = [(names[i], counts[i] / n) for i in order[:MAX_SIZES]]
    non512_kept = sum(p for s, p in kept if s != "512x512")
    non512_all = 1.0 - counts[names == "512x512"].sum() / n
    rows = []
    for s, p in kept:
        w, h = (int(t) for t in s.split("x"))
        p = p if s == "512x512" else p * non512_all / max(non512_kept, 1e-12)
        rows.append([w, h, round(float(p), 5)])
    return rows, float(non512_all)


def fit(ann: Path, image_dirs: Sequence[Path] = ()) -> Dict:
    """The model dict from an annotation CSV and optional split directories with photos."""
    table, problems = read_annotations(ann)
    if problems:
        raise ValueError(f"{ann}: {problems[0]}")
    cats = np.asarray(table.image_category, dtype=object)
    photos = [load_split(Path(d)) for d in image_dirs]
    if photos:
        f_kps = np.concatenate([t.keypoints for t, _ in photos])
        f_cats = np.concatenate([np.asarray(t.image_category, dtype=object) for t, _ in photos])
        f_sizes = np.concatenate([s for _, s in photos])
    else:
        f_kps, f_cats = table.keypoints, cats
        f_sizes = np.full((len(cats), 2), 512.0)
    model = {"fitted_from": {"annotations": Path(ann).name, "rows": int(len(cats)),
                             "photos": [f"{Path(d).parent.name}/{Path(d).name}" for d in image_dirs],
                             "photo_rows": int(len(f_cats)) if photos else 0},
             "layouts": {}, "absence": {}, "occluded": {}, "framing": {}, "real": {}}
    for cat in CATEGORIES:
        names = CATEGORY_KEYPOINTS[cat]
        kps = table.keypoints[cats == cat][:, category_indices(cat)]
        if not len(kps):
            raise ValueError(f"{ann}: no {cat} rows")
        v = kps[..., 2]
        layouts, _ = normalised_layouts(kps)
        model["layouts"][cat] = {**fit_pca(layouts), "orientations": orientations(layouts, names)}
        model["absence"][cat] = absence_patterns(v, names)
        present = np.maximum((v >= 0).sum(0), 1)
        model["occluded"][cat] = {n: round(float(o), 5)
                                  for n, o in zip(names, (v == 0).sum(0) / present)}
        fk = f_kps[f_cats == cat][:, category_indices(cat)]
        area, px, py = _box_stats(fk, f_sizes[f_cats == cat])
        model["framing"][cat] = {"levels": list(LEVELS), "area": _r(np.quantile(area, LEVELS)),
                                 "pos_x": _r(np.quantile(px, LEVELS)),
                                 "pos_y": _r(np.quantile(py, LEVELS))}
        model["real"][cat] = {"occluded_frac": round(float((v == 0).mean()), 4),
                              "absent_frac": round(float((v == -1).mean()), 4),
                              "box_area_p10_p50_p90": _r(np.quantile(area, [0.1, 0.5, 0.9]), 4),
                              "non512_frac": round(float(np.mean(np.any(
                                  f_sizes[f_cats == cat] != 512, axis=1))), 4)}
    model["sizes"], non512_all = size_mix(f_sizes)
    model["sizes_by_category"] = {cat: size_mix(f_sizes[f_cats == cat])[0] for cat in CATEGORIES}
    model["real"]["non512_frac"] = round(float(non512_all), 4)
    return model


def calibrate(model_path: Path, n_per_cat: int, seed: int = 9001) -> Dict:
    """Per category and keypoint, the share of annotated points the drawing covers."""
    import cv2

    from pipeline.tools.synth import real_model
    from pipeline.tools.synth.dataset import image_rng
    from pipeline.tools.synth.render import render_sample

    cv2.setNumThreads(1)
    out = {}
    default, real_model.MODEL_PATH = real_model.MODEL_PATH, Path(model_path)
    try:
        _measure(out, n_per_cat, seed, image_rng, render_sample)
    finally:
        real_model.MODEL_PATH = default
    return out


def _measure(out: Dict, n_per_cat: int, seed: int, image_rng, render_sample) -> None:
    for cat in CATEGORIES:
        covered = np.zeros(len(CATEGORY_KEYPOINTS[cat]))
        present = np.zeros(len(CATEGORY_KEYPOINTS[cat]))
        for i in range(n_per_cat):
            meta = render_sample(image_rng(seed, "train", cat, i), cat).meta
            p = np.array(meta["present"], bool)
            covered += p & np.array(meta["drawn_occluded"], bool)
            present += p
        out[cat] = {n: round(float(c / max(p, 1)), 4)
                    for n, c, p in zip(CATEGORY_KEYPOINTS[cat], covered, present)}


def write(model: Dict, path: Path) -> None:
    path.write_text(json.dumps(model, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.synth.fit_real",
                                     description="Fit the synthetic generator's model of real data.")
    parser.add_argument("--ann", type=Path, help="real annotation CSV (official format)")
    parser.add_argument("--images", type=Path, action="append", default=[],
                        help="split directory with real photos and Annotations/*.csv (repeatable)")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--calibrate", type=int, default=0,
                        help="render N images per category to measure the drawing's own occlusion")
    args = parser.parse_args(argv)
    if args.ann is None and not args.calibrate:
        parser.error("give --ann, --calibrate N, or both")
    try:
        if args.ann is not None:
            model = fit(args.ann, args.images)
            model.pop("render_occluded", None)
            write(model, args.out)
        if args.calibrate:
            model = json.loads(args.out.read_text())
            model.pop("render_occluded", None)
            write(model, args.out)                       # measure without the old calibration
            model["render_occluded"] = calibrate(args.out, args.calibrate)
            model["render_calibration_images_per_category"] = args.calibrate
            write(model, args.out)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
