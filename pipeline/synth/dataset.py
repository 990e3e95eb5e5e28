"""Dataset writer: images and CSVs in the competition layout, the real-data guard, realism figures.

Layout written by `generate(out_dir, ...)`::

    out_dir/.synthetic                          JSON of the parameters (marker)
    out_dir/realism.json                        how realistic/hard the set is (realism_stats + shots)
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

from ..fsutil import write_text_atomic
from ..keypoints import CATEGORIES, KEYPOINT_INDEX, NORMALIZER, category_indices
from ..tianchi import read_annotations, read_test_list, write_annotations, write_test_list
from .render import FRAMING, render_sample

# The pipeline's image header reader (one import, to retarget when it moves to pipeline.images).
from ..preprocess import _image_size as _header_size

#: Bump when the drawing changes, so that an existing synthetic set is regenerated.
GENERATOR_VERSION = 2
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
             warm_per_cat: int = 0, jobs: int = -1, progress: bool = True) -> Dict:
    """Write a synthetic data set in the competition layout under `out_dir`.

    Idempotent: with a marker of identical parameters and every CSV present it
    returns at once (summary `skipped: True`). With a marker of other
    parameters the old train/train_warm/test directories are removed first.
    Refuses (RuntimeError) to touch a directory holding real annotations.
    Writes `realism.json` beside the data and returns a summary: parameters,
    images per split, seconds, and the realism figures.
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
        return {"out_dir": str(out_dir), "params": params, "images": counts, "skipped": True}

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


def realism_stats(out_dir) -> Dict:
    """How hard and how realistic a data set in the competition layout is, from its files.

    occluded_frac / absent_frac: fractions of category points with v=0 / v=-1
    over all annotated splits; normalizer_present_frac: images whose two
    normalizer points are both annotated; non512_frac and `sizes` (a histogram
    "WxH" -> count); `framing`: quantiles of the annotated keypoint box area over
    the image area, and the fraction of images below the geometric middle of
    FRAMING (0.5 for an even spread on a log scale); mean_shape_ne: NE
    (pipeline.metrics) on the test split of each category's mean train shape
    (pipeline.baseline), mapped to each test image's size.
    """
    from ..baseline import predict_mean_shape
    from ..metrics import normalized_error

    out_dir = Path(out_dir)
    loaded = {}
    for split, (_, rel) in SPLITS.items():
        if (out_dir / rel).exists():
            loaded[split] = _load_split(out_dir / split, out_dir / rel)
    if "train" not in loaded:
        raise FileNotFoundError(f"{out_dir}: no train annotations")
    v_all, norm_ok, sizes_all, boxes = [], [], [], []
    for table, sizes in loaded.values():
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
           "framing": {**{f"q{q:02d}": float(np.quantile(box, q / 100)) for q in (5, 25, 50, 75, 95)},
                       "below_log_middle": float(np.mean(box < np.sqrt(FRAMING[0] * FRAMING[1]))),
                       "target": list(FRAMING)}}
    if "test" in loaded:
        (train, train_sizes), (test, test_sizes) = loaded["train"], loaded["test"]
        ids, _ = read_test_list(out_dir / TEST_LIST)
        out["test_order_matches"] = list(ids) == list(test.image_id)
        pred = predict_mean_shape(train.keypoints, train.image_category, train_sizes,
                                  test.image_category, test_sizes)
        ne = normalized_error(test.keypoints, pred, test.image_category)
        out.update(mean_shape_ne=ne["ne"], mean_shape_per_category=ne["per_category"],
                   mean_shape_images_skipped=ne["n_images_skipped"])
    return out
