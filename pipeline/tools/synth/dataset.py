"""Dataset writer: images and CSVs in the competition layout, the real-data guard, realism figures.

Layout written by `generate(out_dir, ...)`::

    out_dir/.synthetic                          JSON of the parameters (marker)
    out_dir/realism.json                        how realistic/hard the set is (realism_stats + shots;
                                                with `real_ann`, the real figures side by side)
    out_dir/train/Images/<cat>/<hex>.jpg
    out_dir/train/Annotations/train.csv
    out_dir/train_warm/Images/<cat>/<hex>.jpg   only when warm_per_cat > 0
    out_dir/train_warm/Annotations/annotations.csv
    out_dir/test/Images/<cat>/<hex>.jpg
    out_dir/test/test.csv                       image_id,image_category
    out_dir/test/answers.csv                    ground truth, rows in test.csv order

Each image is drawn from its own RNG seeded with (seed, split, category,
index), so the output does not depend on the number of jobs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from pipeline.fsutil import write_text_atomic
from pipeline.keypoints import CATEGORIES, KEYPOINT_INDEX, NORMALIZER, category_indices

# The pipeline's image header reader (one import, to retarget when it moves to pipeline.prep.images).
from pipeline.prep.preprocess import _image_size as _header_size
from pipeline.tianchi import (
    read_annotations,
    read_test_list,
    write_annotations,
    write_test_list,
)
from pipeline.tools.synth.render import render_sample

#: Bump when the drawing changes, so that an existing synthetic set is regenerated.
GENERATOR_VERSION = 3
MARKER = ".synthetic"
REALISM = "realism.json"

#: Split name -> (RNG id, annotation CSV relative to out_dir).
SPLITS: Dict[str, Tuple[int, str]] = {
    "train": (0, "train/Annotations/train.csv"),
    "test": (1, "test/answers.csv"),
    "train_warm": (2, "train_warm/Annotations/annotations.csv"),
}
TEST_LIST = "test/test.csv"
_BATCH = 25                     # images per joblib task


def image_size(path) -> Tuple[int, int]:
    """(width, height) of an image file, read by the pipeline's header reader."""
    return _header_size(Path(path).read_bytes())


def image_rng(seed: int, split: str, category: str, index: int) -> np.random.Generator:
    """The RNG of one image: seeded from (seed, split, category, index) only."""
    return np.random.default_rng([seed, SPLITS[split][0], CATEGORIES.index(category), index])


def image_name(seed: int, split: str, category: str, index: int) -> str:
    """32-hex file stem derived from (generator version, seed, split, category, index)."""
    key = f"fashionai-synth:{GENERATOR_VERSION}:{seed}:{split}:{category}:{index}"
    return hashlib.md5(key.encode()).hexdigest()


def _render_batch(out_dir: str, seed: int, split: str, category: str,
                  indices: Sequence[int]) -> List[Tuple[str, np.ndarray, Dict]]:
    """Draw and write images; return (image_id, keypoints (24, 3), meta) per index."""
    cv2.setNumThreads(1)
    split_dir = Path(out_dir) / split
    (split_dir / "Images" / category).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in indices:
        sample = render_sample(image_rng(seed, split, category, i), category)
        image_id = f"Images/{category}/{image_name(seed, split, category, i)}.jpg"
        if not cv2.imwrite(str(split_dir / image_id), sample.image,
                           [cv2.IMWRITE_JPEG_QUALITY, sample.meta["quality"]]):
            raise OSError(f"could not write {split_dir / image_id}")
        rows.append((image_id, sample.keypoints, sample.meta))
    return rows


def _params(train_per_cat: int, test_per_cat: int, seed: int, warm_per_cat: int) -> Dict:
    return {"generator": "pipeline.synth", "version": GENERATOR_VERSION, "seed": int(seed),
            "train_per_cat": int(train_per_cat), "test_per_cat": int(test_per_cat),
            "warm_per_cat": int(warm_per_cat)}


def _split_counts(params: Dict) -> Dict[str, int]:
    counts = {"train": params["train_per_cat"], "test": params["test_per_cat"],
              "train_warm": params["warm_per_cat"]}
    return {s: n for s, n in counts.items() if n > 0}


def _expected_files(params: Dict) -> List[str]:
    out = [SPLITS[s][1] for s in _split_counts(params)] + [REALISM]
    return out + ([TEST_LIST] if params["test_per_cat"] > 0 else [])


def _read_marker(out_dir: Path) -> Optional[Dict]:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def check_not_real(out_dir) -> None:
    """Raise RuntimeError when `out_dir` may hold real data: no synthetic marker but
    annotation CSVs (`*/Annotations/*.csv`, `test/test.csv`) or files in a split directory."""
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return
    found = sorted(out_dir.glob("*/Annotations/*.csv")) + \
        ([out_dir / TEST_LIST] if (out_dir / TEST_LIST).exists() else [])
    for split in SPLITS:
        if not found and (out_dir / split).is_dir():
            first = next((p for p in (out_dir / split).rglob("*") if p.is_file()), None)
            found = [first] if first else []
    if found:
        raise RuntimeError(
            f"refusing to write synthetic data into {out_dir}: it holds {found[0]} and no "
            f"{MARKER} marker, so it looks like real data. Choose another directory or "
            f"remove the data yourself.")


def generate(out_dir, train_per_cat: int, test_per_cat: int, seed: int = 0,
             warm_per_cat: int = 0, jobs: int = -1, progress: bool = True,
             real_ann=None) -> Dict:
    """Write a synthetic data set in the competition layout under `out_dir`.

    Idempotent: with a marker of identical parameters and every CSV present it
    returns at once (summary `skipped: True`). With a marker of other
    parameters the old train/train_warm/test directories are removed first.
    Refuses (RuntimeError) to touch a directory holding real annotations.
    Writes `realism.json` beside the data and returns a summary: parameters,
    images per split, seconds, and the realism figures. real_ann: a real annotation
    CSV; its figures (`real_stats`) and the comparison (`vs_real`) are added to
    `realism.json`, also when the set itself is already complete.
    """
    if min(train_per_cat, test_per_cat, warm_per_cat) < 0 or seed < 0:
        raise ValueError("counts and seed must be non-negative")
    if train_per_cat == 0:
        raise ValueError("train_per_cat must be at least 1")
    out_dir = Path(out_dir)
    params = _params(train_per_cat, test_per_cat, seed, warm_per_cat)
    check_not_real(out_dir)
    counts = {s: n * len(CATEGORIES) for s, n in _split_counts(params).items()}
    complete = all((out_dir / c).exists() for c in _expected_files(params))
    if complete and _read_marker(out_dir) == params:
        summary = {"out_dir": str(out_dir), "params": params, "images": counts, "skipped": True}
        if real_ann is not None:
            realism = with_real(json.loads((out_dir / REALISM).read_text()), real_ann)
            write_text_atomic(out_dir / REALISM, json.dumps(realism, indent=1, sort_keys=True) + "\n")
            summary["realism"] = realism
        return summary

    start = time.perf_counter()
    for split in SPLITS:
        if (out_dir / split).exists():
            shutil.rmtree(out_dir / split)
    (out_dir / REALISM).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / MARKER, json.dumps(params, indent=1, sort_keys=True) + "\n")

    tasks = []
    for split, n in _split_counts(params).items():
        for cat in CATEGORIES:
            tasks += [(split, cat, range(i, min(i + _BATCH, n))) for i in range(0, n, _BATCH)]
    results = _run_tasks(str(out_dir), seed, tasks, jobs, progress)

    metas = []
    for split in _split_counts(params):
        ids, cats, kps = [], [], []
        for (t_split, cat, _), rows in zip(tasks, results):
            if t_split == split:
                for image_id, k, meta in rows:
                    ids.append(image_id)
                    cats.append(cat)
                    kps.append(k)
                    metas.append(meta)
        write_annotations(out_dir / SPLITS[split][1], ids, cats, np.stack(kps))
        if split == "test":
            write_test_list(out_dir / TEST_LIST, ids, cats)
    seconds = round(time.perf_counter() - start, 2)
    realism = {**shot_stats(metas), **realism_stats(out_dir)}
    if real_ann is not None:
        realism = with_real(realism, real_ann)
    write_text_atomic(out_dir / REALISM, json.dumps(realism, indent=1, sort_keys=True) + "\n")
    return {"out_dir": str(out_dir), "params": params, "images": counts, "skipped": False,
            "seconds": seconds, "realism": realism}


def _run_tasks(out_dir: str, seed: int, tasks: List, jobs: int, progress: bool) -> List:
    """Render every (split, category, indices) task, in task order."""
    from tqdm import tqdm

    total = sum(len(t[2]) for t in tasks)
    bar = tqdm(total=total, desc="synth", unit="img", disable=not progress)
    n_jobs = _effective_jobs(jobs, len(tasks))
    if n_jobs == 1:
        results = []
        for split, cat, idx in tasks:
            results.append(_render_batch(out_dir, seed, split, cat, list(idx)))
            bar.update(len(idx))
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        results = []
        calls = (delayed(_render_batch)(out_dir, seed, s, c, list(i)) for s, c, i in tasks)
        for rows in parallel(calls):
            results.append(rows)
            bar.update(len(rows))
    bar.close()
    return results


def _effective_jobs(jobs: int, n_tasks: int) -> int:
    cpus = os.cpu_count() or 1
    n = cpus + 1 + jobs if jobs < 0 else jobs
    return max(1, min(n, n_tasks))


# --------------------------------------------------------------------------- realism

def shot_stats(metas: Sequence[Dict]) -> Dict:
    """Fractions of images with a figure, a second garment, per shot kind; JPEG qualities.

    metas: the per-image `Sample.meta` dicts of a generated set (all splits).
    """
    n = max(len(metas), 1)
    quality = np.array([m["quality"] for m in metas]) if metas else np.zeros(1)
    second = [m for m in metas if m["second"]]
    return {
        "figure_frac": sum(bool(m["figure"]) for m in metas) / n,
        "second_garment_frac": len(second) / n,
        "second_garment_over_frac": sum(m["second_place"] == "over" for m in second) / n,
        "shot_frac": {s: sum(m["shot"] == s for m in metas) / n for s in ("worn", "flat", "hanger")},
        "jpeg_quality": {"min": int(quality.min()), "median": float(np.median(quality)),
                         "max": int(quality.max())},
    }


def keypoint_box_fraction(keypoints: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Area of the box around each image's annotated points over the image area.

    keypoints: (N, 24, 3) original pixels; sizes: (N, 2) width, height.
    Returns (N,) float64, NaN for images with fewer than two annotated points.
    """
    out = np.full(len(keypoints), np.nan)
    for i, (k, (w, h)) in enumerate(zip(keypoints, sizes)):
        pts = k[k[:, 2] >= 0, :2].astype(np.float64)
        if len(pts) >= 2:
            box = pts.max(0) - pts.min(0)
            out[i] = box[0] * box[1] / float(w * h)
    return out


def _load_split(split_dir: Path, csv_path: Path):
    table, problems = read_annotations(csv_path)
    if problems:
        raise ValueError(f"{csv_path}: {problems[0]}")
    sizes = np.array([image_size(split_dir / i) for i in table.image_id], dtype=np.float64)
    return table, sizes.reshape(-1, 2)


#: The checks of issue 21 on a synthetic set against real statistics: (kind, tolerance).
TOLERANCES = {"occluded_frac": ("abs", 0.04), "absent_frac": ("abs", 0.03),
              "box_p10": ("rel", 0.25), "box_p50": ("rel", 0.25), "box_p90": ("rel", 0.25),
              "non512_frac": ("abs", 0.08), "mean_shape_ne": ("abs", 0.06)}


def group_stats(keypoints: np.ndarray, categories: Sequence[str],
                sizes: Optional[np.ndarray]) -> Dict:
    """Per category and over "all": occluded / absent shares of the category's points, the
    keypoint-box area over the image area (p10, p50, p90) and the share of images not
    512x512 (None without sizes: then the boxes are taken over a 512x512 frame)."""
    categories = np.asarray(categories, dtype=object)
    known = sizes is not None
    sizes = np.asarray(sizes, np.float64) if known else np.full((len(categories), 2), 512.0)
    box = keypoint_box_fraction(keypoints, sizes)
    out = {}
    for cat in list(CATEGORIES) + ["all"]:
        mask = categories == cat if cat != "all" else np.ones(len(categories), bool)
        if not mask.any():
            continue
        v = np.concatenate([k[category_indices(c), 2] for c, k in
                            zip(categories[mask], keypoints[mask])])
        b = box[mask]
        b = b[np.isfinite(b)]
        q = np.quantile(b, [0.1, 0.5, 0.9]) if len(b) else [float("nan")] * 3
        out[cat] = {"n_images": int(mask.sum()),
                    "occluded_frac": float((v == 0).mean()), "absent_frac": float((v == -1).mean()),
                    "box_p10": float(q[0]), "box_p50": float(q[1]), "box_p90": float(q[2]),
                    "non512_frac": float(np.mean(np.any(sizes[mask] != 512, axis=1))) if known
                    else None}
    return out


def mean_shape_stats(train, train_sizes, test, test_sizes) -> Dict:
    """NE on `test` of each category's mean relative shape on `train` (pipeline.stages.baseline)."""
    from pipeline.combine.mean_shape import predict_mean_shape
    from pipeline.scoring.metrics import normalized_error

    pred = predict_mean_shape(train.keypoints, train.image_category, train_sizes,
                              test.image_category, test_sizes)
    return normalized_error(test.keypoints, pred, test.image_category)


def _real_sizes(csv_path: Path, image_ids: Sequence[str]) -> Tuple[Optional[np.ndarray], str]:
    """Sizes of a real CSV's images when they sit beside it (SPLIT/Images/... for
    SPLIT/Annotations/x.csv or SPLIT/answers.csv), else (None, why)."""
    for root in (csv_path.parent, csv_path.parent.parent):
        if image_ids and (root / image_ids[0]).is_file():
            if all((root / i).is_file() for i in image_ids):
                return np.array([image_size(root / i) for i in image_ids], np.float64), \
                    f"image headers under {root}"
    return None, "no images beside the CSV: boxes over a 512x512 frame, sizes unknown"


def real_stats(csv_path) -> Dict:
    """The realism figures of a real annotation CSV, computed from it at run time.

    Occluded / absent shares and box areas per category; with the images beside the
    CSV, the real sizes (box areas over the real image area, the non-512 share),
    else a 512x512 frame. The mean-shape NE uses a fixed split of the rows: an image
    whose md5("realism-split:" + image_id) is 0 mod 5 is test, the rest train.
    """
    csv_path = Path(csv_path)
    table, problems = read_annotations(csv_path)
    if problems:
        raise ValueError(f"{csv_path}: {problems[0]}")
    ids = list(table.image_id)
    sizes, sizes_from = _real_sizes(csv_path, ids)
    out = {"source": str(csv_path), "sizes_from": sizes_from, "n_images": len(ids),
           **group_stats(table.keypoints, table.image_category, sizes)}
    is_test = np.array([int(hashlib.md5(f"realism-split:{i}".encode()).hexdigest()[:8], 16) % 5 == 0
                        for i in ids])
    if is_test.any() and (~is_test).any():
        s = sizes if sizes is not None else np.full((len(ids), 2), 512.0)
        ne = mean_shape_stats(table.subset(~is_test), s[~is_test], table.subset(is_test),
                              s[is_test])
        out["all"]["mean_shape_ne"] = ne["ne"]
        for cat, value in ne["per_category"].items():
            out[cat]["mean_shape_ne"] = value
    return out


def compare(synthetic: Dict, real: Dict) -> List[Dict]:
    """Rows (statistic, category, synthetic, real, tolerance, within) for every statistic of
    TOLERANCES, per category and over all; `within` is None where a side lacks the figure."""
    rows = []
    for cat in list(CATEGORIES) + ["all"]:
        for stat, (kind, tol) in TOLERANCES.items():
            a = synthetic.get(cat, {}).get(stat)
            b = real.get(cat, {}).get(stat)
            within = None
            if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
                within = bool(abs(a - b) <= tol + 1e-12) if kind == "abs" else \
                    bool(b > 0 and abs(a / b - 1) <= tol + 1e-12)
            rows.append({"statistic": stat, "category": cat, "synthetic": a, "real": b,
                         "tolerance": f"±{tol:g}" if kind == "abs" else f"±{tol:.0%}",
                         "within": within})
    return rows


def with_real(realism: Dict, real_ann) -> Dict:
    """`realism` (from realism_stats) with the real figures of `real_ann` and the comparison."""
    real = real_stats(real_ann)
    return {**realism, "real": real, "vs_real": compare(realism["per_category"], real)}


def comparison_lines(rows: Sequence[Dict]) -> List[str]:
    """The comparison as text lines: statistic, category, synthetic, real, tolerance, ok."""
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    lines = [f"{'statistic':<14} {'category':<9} {'synth':>6} {'real':>6} {'tol':>5}  ok"]
    for r in rows:
        ok = {True: "yes", False: "NO", None: "-"}[r["within"]]
        lines.append(f"{r['statistic']:<14} {r['category']:<9} {fmt(r['synthetic']):>6} "
                     f"{fmt(r['real']):>6} {r['tolerance']:>5}  {ok}")
    return lines


def realism_stats(out_dir) -> Dict:
    """How hard and how realistic a data set in the competition layout is, from its files.

    occluded_frac / absent_frac: fractions of category points with v=0 / v=-1
    over all annotated splits; normalizer_present_frac: images whose two
    normalizer points are both annotated; non512_frac and `sizes` (a histogram
    "WxH" -> count); `framing`: quantiles of the annotated keypoint box area over
    the image area; mean_shape_ne: NE (pipeline.metrics) on the test split of each
    category's mean train shape (pipeline.stages.baseline), mapped to each test image's
    size; `per_category` (and "all"): the figures compared with real data
    (`group_stats`, plus mean_shape_ne).
    """
    out_dir = Path(out_dir)
    loaded = {}
    for split, (_, rel) in SPLITS.items():
        if (out_dir / rel).exists():
            loaded[split] = _load_split(out_dir / split, out_dir / rel)
    if "train" not in loaded:
        raise FileNotFoundError(f"{out_dir}: no train annotations")
    v_all, norm_ok, sizes_all, boxes, kps_all, cats_all = [], [], [], [], [], []
    for table, sizes in loaded.values():
        kps_all.append(table.keypoints)
        cats_all.append(np.asarray(table.image_category, dtype=object))
        sizes_all.append(sizes)
        boxes.append(keypoint_box_fraction(table.keypoints, sizes))
        for cat, k in zip(table.image_category, table.keypoints):
            v_all.append(k[category_indices(cat), 2])
            a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
            norm_ok.append(k[a, 2] >= 0 and k[b, 2] >= 0)
    v = np.concatenate(v_all)
    sizes = np.concatenate(sizes_all)
    box = np.concatenate(boxes)
    box = box[np.isfinite(box)]
    names, counts = np.unique([f"{int(w)}x{int(h)}" for w, h in sizes], return_counts=True)
    out = {"n_images": int(len(sizes)),
           "occluded_frac": float((v == 0).mean()), "absent_frac": float((v == -1).mean()),
           "normalizer_present_frac": float(np.mean(norm_ok)),
           "non512_frac": float(np.mean(np.any(sizes != 512, axis=1))),
           "sizes": {str(n): int(c) for n, c in zip(names, counts)},
           "framing": {f"q{q:02d}": float(np.quantile(box, q / 100))
                       for q in (5, 10, 25, 50, 75, 90, 95)},
           "per_category": group_stats(np.concatenate(kps_all), np.concatenate(cats_all), sizes)}
    if "test" in loaded:
        (train, train_sizes), (test, test_sizes) = loaded["train"], loaded["test"]
        ids, _ = read_test_list(out_dir / TEST_LIST)
        out["test_order_matches"] = list(ids) == list(test.image_id)
        ne = mean_shape_stats(train, train_sizes, test, test_sizes)
        out.update(mean_shape_ne=ne["ne"], mean_shape_per_category=ne["per_category"],
                   mean_shape_images_skipped=ne["n_images_skipped"])
        out["per_category"]["all"]["mean_shape_ne"] = ne["ne"]
        for cat, value in ne["per_category"].items():
            out["per_category"][cat]["mean_shape_ne"] = value
    return out
